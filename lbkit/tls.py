# -*- test-case-name: tests.test_tls -*-
"""
TLS for lbkit: certificates for terminating frontends (chosen by SNI), and
the connection creators that speak TLS to servers.

Everything here goes through Twisted's own TLS machinery
(L{CertificateOptions<twisted.internet.ssl.CertificateOptions>},
L{optionsForClientTLS<twisted.internet.ssl.optionsForClientTLS>},
L{TLSMemoryBIOFactory<twisted.protocols.tls.TLSMemoryBIOFactory>});
the files are read with the C{cryptography} package only to check them and
give errors that name the file::

    from lbkit import tls, http

    http.Frontend("tcp:8443:interface=127.0.0.1",
                  tls=tls.Certificates(default="default.pem",
                                       byHost={"a.example": "a.pem"}),
                  default=app)

See docs/tls.md.
"""

from __future__ import annotations

import datetime
import importlib.util
from typing import Any, Mapping, Sequence, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from lbkit._address import isIPv4, isIPv6
from lbkit._origin import definedAt
from lbkit.error import ConfigError

__all__ = ["Certificates", "KeyPair", "loadKeyPair", "clientCreator", "serverFactory", "fromSSLEndpoint", "wrapClientEndpoint"]

_log = Logger(namespace="lbkit.tls")

#: A PEM file holding a key and its chain, C{(certificateFile, keyFile)}, or
#: C{(certificateFile, keyFile, chainFile)}.
KeyPair = Union[str, Tuple[str, str], Tuple[str, str, str]]


class _Loaded:
    """One checked key and certificate chain, ready for L{CertificateOptions<twisted.internet.ssl.CertificateOptions>}."""

    def __init__(self, certFile: str, keyFile: str, key: Any, chain: list[x509.Certificate]) -> None:
        self.certFile = certFile
        self.keyFile = keyFile
        self.privateKey = crypto.PKey.from_cryptography_key(key)
        self.certificate = crypto.X509.from_cryptography(chain[0])
        self.extraCertChain = [crypto.X509.from_cryptography(c) for c in chain[1:]]
        self.notAfter = chain[0].not_valid_after_utc
        self.names = _names(chain[0])

    def options(self, protocols: Sequence[bytes] | None, clientCA: list[ssl.Certificate] | None) -> ssl.CertificateOptions:
        extra: dict[str, Any] = {}
        if clientCA:
            extra = dict(verify=True, caCerts=[c.original for c in clientCA], requireCertificate=True)
        return ssl.CertificateOptions(
            privateKey=self.privateKey,
            certificate=self.certificate,
            extraCertChain=self.extraCertChain,
            acceptableProtocols=list(protocols) if protocols else None,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **extra,
        )


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


def _read(path: str, what: str) -> bytes:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"TLS {what} file must be a path, not {path!r}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read TLS {what} file {path!r}: {e.strerror}") from None


def _loadCertificates(path: str, data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(f"TLS file {path!r}: cannot parse its certificate: {e}") from None


def _loadKey(path: str, data: bytes) -> Any:
    if b"PRIVATE KEY-----" not in data:
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"TLS file {path!r}: cannot load its private key: {e}") from None


def _publicBytes(key: Any) -> bytes:
    return key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def loadKeyPair(pair: KeyPair, now: datetime.datetime | None = None) -> _Loaded:
    """
    Read and check one key and certificate chain.

    @param pair: A PEM file holding the private key and the certificate
        chain (leaf first), or C{(certificateFile, keyFile)}.
    @raise ConfigError: naming the file when it is missing or unreadable,
        holds no key or no certificate, when the key does not match the
        certificate, or when the certificate has expired or is not valid
        yet.
    """
    chainFile = None
    if isinstance(pair, tuple) and len(pair) == 2:
        certFile, keyFile = pair
    elif isinstance(pair, tuple) and len(pair) == 3:
        certFile, keyFile, chainFile = pair
    elif isinstance(pair, str):
        certFile = keyFile = pair
    else:
        raise ConfigError(f"TLS certificate must be a PEM file path or (certFile, keyFile), not {pair!r}")
    certData = _read(certFile, "certificate")
    keyData = certData if keyFile == certFile else _read(keyFile, "key")
    chain = _loadCertificates(certFile, certData)
    if not chain:
        raise ConfigError(f"TLS file {certFile!r} holds no PEM certificate")
    if chainFile is not None:
        chain += _loadCertificates(chainFile, _read(chainFile, "certificate chain"))
    key = _loadKey(keyFile, keyData)
    if key is None:
        raise ConfigError(f"TLS file {keyFile!r} holds no PEM private key")
    if _publicBytes(key.public_key()) != _publicBytes(chain[0].public_key()):
        where = repr(certFile) if certFile == keyFile else f"{keyFile!r} (key) and {certFile!r} (certificate)"
        raise ConfigError(f"TLS file {where}: the private key does not match the certificate")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    leaf = chain[0]
    if leaf.not_valid_after_utc < now:
        raise ConfigError(
            f"TLS file {certFile!r}: the certificate for {_subject(leaf)} expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if leaf.not_valid_before_utc > now:
        raise ConfigError(
            f"TLS file {certFile!r}: the certificate for {_subject(leaf)} is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    return _Loaded(certFile, keyFile, key, chain)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _loadCAs(path: str) -> list[ssl.Certificate]:
    data = _read(path, "CA")
    certs = _loadCertificates(path, data)
    if not certs:
        raise ConfigError(f"TLS CA file {path!r} holds no PEM certificate")
    return [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in certs]


class Certificates:
    """
    The certificates a TLS-terminating frontend serves, chosen by the
    server name (SNI) the client asks for.

    Every file is read and checked when this is built, so a bad file stops
    start-up with a L{ConfigError} naming it.

    @ivar default: What is served when the client sends no server name or
        one no entry of C{byHost} covers.
    @ivar byHost: Host name (or C{"*.domain"} wildcard) to key pair.
    @ivar clientCA: With a CA file, clients must present a certificate it
        signed (mutual TLS).
    """

    def __init__(
        self,
        default: KeyPair,
        byHost: Mapping[str, KeyPair] | None = None,
        *,
        clientCA: str | None = None,
    ) -> None:
        self.definedAt = definedAt()
        self.default = default
        self.byHost = dict(byHost or {})
        for host in self.byHost:
            if not isinstance(host, str) or not host:
                raise ConfigError(f"tls.Certificates: byHost keys must be host names, not {host!r}")
        self.clientCA = clientCA
        self.generation = 0
        self._load()

    def __repr__(self) -> str:
        return f"<tls.Certificates default={self.default!r} byHost={sorted(self.byHost)!r}>"

    def _load(self) -> None:
        loaded = loadKeyPair(self.default)
        hosts = {host.lower().rstrip("."): loadKeyPair(pair) for host, pair in self.byHost.items()}
        cas = _loadCAs(self.clientCA) if self.clientCA is not None else None
        self._default, self._hosts, self._clientCAs = loaded, hosts, cas
        self.generation += 1

    def reload(self) -> None:
        """
        Read every file again.  Connections already open keep the
        certificate they got; new ones get the new files.  When a file is
        wrong, nothing changes and L{ConfigError} is raised.
        """
        self._load()
        _log.info("lbkit: reloaded TLS certificates {certs}", certs=self)

    def adopt(self, other: Certificates) -> None:
        """
        Serve what C{other} (already loaded and checked) serves, from the
        next handshake on; used when a site file is applied again, so the
        running listener keeps its port and connections.
        """
        self.default, self.byHost, self.clientCA = other.default, dict(other.byHost), other.clientCA
        self._default, self._hosts, self._clientCAs = other._default, other._hosts, other._clientCAs
        self.generation += 1

    def lookup(self, serverName: str | None) -> Any:
        """
        The key pair for C{serverName}: an exact entry, else the
        C{"*.domain"} wildcard entry for its parent domain, else the
        default.

        A wildcard stands for exactly one label (RFC 6125, section 6.4.3, as
        TLS clients check it): C{"*.example.com"} covers C{a.example.com},
        not C{a.b.example.com} nor C{example.com}.
        """
        if serverName:
            name = serverName.lower().rstrip(".")
            found = self._hosts.get(name)
            if found is not None:
                return found
            first, dot, parent = name.partition(".")
            if first and dot and parent:
                found = self._hosts.get("*." + parent)
                if found is not None:
                    return found
        return self._default

    def connectionCreator(self, protocols: Sequence[bytes] = (b"http/1.1",)) -> IOpenSSLServerConnectionCreator:
        """
        An L{IOpenSSLServerConnectionCreator} serving these certificates
        by SNI and offering C{protocols} through ALPN.
        """
        return _SNICreator(self, protocols)


@implementer(IOpenSSLServerConnectionCreator)
class _SNICreator:
    """
    Creates server-side TLS connections on the default certificate's
    context; the SNI callback switches to the named host's context.
    """

    def __init__(self, certs: Certificates, protocols: Sequence[bytes]) -> None:
        self._certs = certs
        self._protocols = list(protocols)
        self._generation = -1
        self._contexts: dict[int, SSL.Context] = {}
        self._default: ssl.CertificateOptions | None = None

    def _context(self, loaded: _Loaded) -> SSL.Context:
        ctx = self._contexts.get(id(loaded))
        if ctx is None:
            ctx = loaded.options(self._protocols, self._certs._clientCAs).getContext()
            self._contexts[id(loaded)] = ctx
        return ctx

    def _refresh(self) -> ssl.CertificateOptions:
        certs = self._certs
        if self._default is None or self._generation != certs.generation:
            self._generation = certs.generation
            self._contexts = {}
            options = certs._default.options(self._protocols, certs._clientCAs)
            ctx = options.getContext()
            self._contexts[id(certs._default)] = ctx
            ctx.set_tlsext_servername_callback(self._serverName)
            self._default = options
        return self._default

    def _serverName(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace") if raw else None
        loaded = self._certs.lookup(name)
        if loaded is not self._certs._default:
            connection.set_context(self._context(loaded))

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return self._refresh().serverConnectionForTLS(tlsProtocol)  # type: ignore[no-any-return]


def serverFactory(
    certs: Certificates, wrapped: IProtocolFactory, reactor: Any, protocols: Sequence[bytes] = (b"http/1.1",)
) -> TLSMemoryBIOFactory:
    """
    Wrap C{wrapped} so that its connections are TLS, terminated here with
    C{certs}.
    """
    factory = TLSMemoryBIOFactory(certs.connectionCreator(protocols), False, wrapped, reactor)
    factory.noisy = False
    return factory


# -- ssl: endpoint strings ----------------------------------------------------


def _split(description: str) -> list[str]:
    """Split an endpoint string on colons not escaped with a backslash."""
    parts, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out, escaped = [], False
    for ch in text:
        if escaped or ch != "\\":
            out.append(ch)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def fromSSLEndpoint(description: str) -> tuple[str, Certificates] | None:
    """
    Turn Twisted's C{ssl:PORT:privateKey=K:certKey=C[:extraCertChain=X]}
    server string into the equivalent C{tcp:} string and L{Certificates},
    so that lbkit checks the files, uses its TLS defaults and offers ALPN.

    @return: C{None} for strings that are not C{ssl:}, or that use options
        only Twisted itself handles (C{sslmethod}, C{dhParameters}).
    @raise ConfigError: naming the file when one is wrong.
    """
    if not description.startswith("ssl:"):
        return None
    parts = _split(description)[1:]
    keep: list[str] = []
    options: dict[str, str] = {}
    for part in parts:
        name, eq, value = part.partition("=")
        if eq and name in ("privateKey", "certKey", "extraCertChain", "sslmethod", "dhParameters"):
            options[name] = _unescape(value)
        else:
            keep.append(part)
    if "sslmethod" in options or "dhParameters" in options:
        return None
    keyFile = options.get("privateKey", "server.pem")
    certFile = options.get("certKey", keyFile)
    pair: KeyPair = certFile if certFile == keyFile else (certFile, keyFile)
    if "extraCertChain" in options:
        pair = (certFile, keyFile, options["extraCertChain"])
    return "tcp:" + ":".join(keep), Certificates(pair)


# -- TLS to servers -----------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerifyCreator:
    """Client connections that send SNI but check nothing about the server."""

    def __init__(self, serverName: str | None, alpn: Sequence[bytes] | None = None) -> None:
        self._options = ssl.CertificateOptions(
            verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2, acceptableProtocols=alpn
        )
        self._serverName = serverName.encode("idna") if serverName else None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        return connection  # type: ignore[no-any-return]


def _isAddress(host: str) -> bool:
    return isIPv4(host) or isIPv6(host)


def clientCreator(
    serverName: str,
    ca: str | None = None,
    verify: bool = True,
    label: str = "server",
    *,
    warn: bool = True,
    alpn: Sequence[bytes] | None = None,
) -> IOpenSSLClientConnectionCreator:
    """
    The connection creator lbkit uses to speak TLS to a server.

    @param serverName: Sent as SNI (unless it is an IP address) and checked
        against the server's certificate with service-identity.
    @param ca: A PEM file of CA certificates to trust; the platform's trust
        store when C{None}.
    @param verify: When false, the server's certificate is not checked at
        all; a warning is logged.
    @param warn: Whether to log that warning (L{lbkit.Server} logs it
        itself when it is built, then builds its creator without).
    @param alpn: The protocols offered with ALPN (C{[b"h2"]} for a
        C{proto="h2"} server), or C{None} for none.
    @raise ConfigError: when C{ca} cannot be read or holds no certificate.
    """
    if not verify:
        if warn:
            _log.warn(
                "lbkit: {label}: TLS certificate verification is OFF (verify=False): "
                "the connection can be intercepted",
                label=label,
            )
        return _NoVerifyCreator(None if _isAddress(serverName) else serverName, alpn)
    trustRoot: Any
    if ca is None:
        trustRoot = ssl.platformTrust()
    else:
        trustRoot = ssl.trustRootFromCertificates(_loadCAs(ca))
    return ssl.optionsForClientTLS(serverName, trustRoot=trustRoot, acceptableProtocols=alpn)  # type: ignore[no-any-return]


@implementer(IStreamClientEndpoint)
class _TLSClientEndpoint:
    """
    Like L{twisted.internet.endpoints.wrapClientTLS}, with a quiet factory
    and the reactor as the TLS layer's clock.
    """

    def __init__(self, creator: IOpenSSLClientConnectionCreator, endpoint: IStreamClientEndpoint, reactor: Any) -> None:
        self._creator = creator
        self._endpoint = endpoint
        self._reactor = reactor

    def __repr__(self) -> str:
        return f"<TLS over {self._endpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        factory = TLSMemoryBIOFactory(self._creator, True, protocolFactory, self._reactor)
        factory.noisy = False
        d: Deferred[Any] = self._endpoint.connect(factory)
        return d.addCallback(_unwrap)


def _unwrap(protocol: Any) -> IProtocol:
    wrapped: IProtocol = protocol.wrappedProtocol
    return wrapped


def wrapClientEndpoint(
    creator: IOpenSSLClientConnectionCreator, endpoint: IStreamClientEndpoint, reactor: Any
) -> IStreamClientEndpoint:
    """An endpoint that connects with C{endpoint}, then speaks TLS made by C{creator}."""
    return _TLSClientEndpoint(creator, endpoint, reactor)


def h2Available() -> bool:
    """
    Whether lbkit can serve HTTP/2: the C{h2} package (an optional
    dependency) is installed.  Without it a TLS http frontend offers only
    C{http/1.1} through ALPN.
    """
    # (found, not imported: h2's connection is imported by the first
    # HTTP/2 connection, lbkit.http._h2.loadH2; issue 11, RSS)
    try:
        return importlib.util.find_spec("h2.connection") is not None
    except ImportError:
        return False
