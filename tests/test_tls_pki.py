"""
A throw-away PKI for the TLS tests (made with C{cryptography} at run time:
no private key is ever committed), and the checks L{lbkit.tls} makes of the
files it is given.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from lbkit.error import ConfigError
from lbkit.tls import Certificates, loadKeyPair

_DAY = datetime.timedelta(days=1)


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certPEM(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class PKI:
    """
    A CA and the certificates it signs, written as PEM files into
    C{directory}.

    @ivar caFile: The CA certificate (what clients trust).
    """

    def __init__(self, directory: str, name: str = "lbkit test CA") -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.caKey = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.caCert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.caKey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.caKey, hashes.SHA256())
        )
        self.caFile = self.path("ca.pem")
        with open(self.caFile, "wb") as f:
            f.write(_certPEM(self.caCert))

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def issue(
        self,
        filename: str,
        commonName: str,
        names: tuple[str, ...] = (),
        *,
        notBefore: datetime.datetime | None = None,
        notAfter: datetime.datetime | None = None,
        wrongKey: bool = False,
        separateKey: bool = False,
        client: bool = False,
    ) -> str:
        """
        Write a PEM file holding a new key and a certificate for
        C{commonName} (with C{names} as DNS subject alternative names,
        C{commonName} by default), followed by the CA certificate.

        @param wrongKey: Write a different key than the certificate's.
        @param separateKey: Write the key to C{filename + ".key"} instead.
        @return: The path written.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)]))
            .issuer_name(self.caCert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore or now - _DAY)
            .not_valid_after(notAfter or now + 10 * _DAY)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in (names or (commonName,))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.caKey, hashes.SHA256())
        )
        if wrongKey:
            key = ec.generate_private_key(ec.SECP256R1())
        path = self.path(filename)
        chain = _certPEM(cert) + _certPEM(self.caCert)
        if separateKey:
            with open(path + ".key", "wb") as f:
                f.write(_keyPEM(key))
            with open(path, "wb") as f:
                f.write(chain)
        else:
            with open(path, "wb") as f:
                f.write(_keyPEM(key) + chain)
        return path


def makePKI(testCase: SynchronousTestCase) -> PKI:
    """A L{PKI} in a fresh temporary directory of C{testCase}."""
    return PKI(os.path.abspath(testCase.mktemp()))


class CertificateFileTests(SynchronousTestCase):
    """
    L{Certificates} and L{loadKeyPair} read every file at once and stop
    start-up with a L{ConfigError} naming the file that is wrong.
    """

    def setUp(self) -> None:
        self.pki = makePKI(self)

    def assertNamesFile(self, error: ConfigError, path: str, words: str) -> None:
        message = str(error)
        self.assertIn(path, message)
        self.assertIn(words, message)

    def test_good(self) -> None:
        """A key with its matching, current certificate chain loads."""
        loaded = loadKeyPair(self.pki.issue("a.pem", "a.example"))
        self.assertEqual(loaded.names, ["a.example"])
        self.assertEqual(len(loaded.extraCertChain), 1)

    def test_separateKeyFile(self) -> None:
        """C{(certificateFile, keyFile)} reads the two files."""
        path = self.pki.issue("a.pem", "a.example", separateKey=True)
        loaded = loadKeyPair((path, path + ".key"))
        self.assertEqual(loaded.keyFile, path + ".key")

    def test_chainFile(self) -> None:
        """C{(certificateFile, keyFile, chainFile)} adds the chain file's certificates."""
        path = self.pki.issue("a.pem", "a.example", separateKey=True)
        loaded = loadKeyPair((path, path + ".key", self.pki.caFile))
        self.assertEqual(len(loaded.extraCertChain), 2)

    def test_missing(self) -> None:
        """A file that does not exist is named."""
        path = self.pki.path("nothere.pem")
        e = self.assertRaises(ConfigError, Certificates, default=path)
        self.assertNamesFile(e, path, "No such file")

    def test_unreadable(self) -> None:
        """A path that cannot be read (here, a directory) is named."""
        e = self.assertRaises(ConfigError, Certificates, default=self.pki.directory)
        self.assertNamesFile(e, self.pki.directory, "cannot read TLS certificate file")

    def test_noKey(self) -> None:
        """A file with a certificate but no key is named."""
        e = self.assertRaises(ConfigError, Certificates, default=self.pki.caFile)
        self.assertNamesFile(e, self.pki.caFile, "no PEM private key")

    def test_noCertificate(self) -> None:
        """A file with neither is named."""
        path = self.pki.path("junk.pem")
        with open(path, "w") as f:
            f.write("not a certificate\n")
        e = self.assertRaises(ConfigError, Certificates, default=path)
        self.assertNamesFile(e, path, "no PEM certificate")

    def test_mismatchedKey(self) -> None:
        """A key that is not the certificate's is refused."""
        path = self.pki.issue("wrong.pem", "a.example", wrongKey=True)
        e = self.assertRaises(ConfigError, Certificates, default=path)
        self.assertNamesFile(e, path, "does not match")

    def test_mismatchedSeparateKey(self) -> None:
        """With separate files, both are named."""
        path = self.pki.issue("wrong.pem", "a.example", wrongKey=True, separateKey=True)
        e = self.assertRaises(ConfigError, loadKeyPair, (path, path + ".key"))
        self.assertNamesFile(e, path + ".key", "does not match")

    def test_expired(self) -> None:
        """An expired certificate is refused, naming the file and the date."""
        now = datetime.datetime.now(datetime.timezone.utc)
        path = self.pki.issue("old.pem", "old.example", notBefore=now - 30 * _DAY, notAfter=now - 2 * _DAY)
        good = self.pki.issue("d.pem", "default")
        e = self.assertRaises(ConfigError, Certificates, default=good, byHost={"old.example": path})
        self.assertNamesFile(e, path, "expired on")

    def test_notYetValid(self) -> None:
        """A certificate valid only in the future is refused."""
        now = datetime.datetime.now(datetime.timezone.utc)
        path = self.pki.issue("new.pem", "new.example", notBefore=now + 2 * _DAY, notAfter=now + 30 * _DAY)
        e = self.assertRaises(ConfigError, Certificates, default=path)
        self.assertNamesFile(e, path, "not valid before")

    def test_badHostKey(self) -> None:
        """C{byHost} keys must be host names."""
        good = self.pki.issue("d.pem", "default")
        self.assertRaises(ConfigError, Certificates, default=good, byHost={"": good})

    def test_lookup(self) -> None:
        """Exact names win, then a wildcard for the parent domain, then the default."""
        d = self.pki.issue("d.pem", "default")
        a = self.pki.issue("a.pem", "a.example")
        w = self.pki.issue("w.pem", "*.b.example")
        certs = Certificates(default=d, byHost={"A.example": a, "*.b.example": w})
        self.assertEqual(certs.lookup("a.example").certFile, a)
        self.assertEqual(certs.lookup("a.example.").certFile, a)
        self.assertEqual(certs.lookup("x.b.example").certFile, w)
        self.assertEqual(certs.lookup("y.x.b.example").certFile, d)
        self.assertEqual(certs.lookup(".b.example").certFile, d)
        self.assertEqual(certs.lookup("b.example").certFile, d)
        self.assertEqual(certs.lookup(None).certFile, d)

    def test_reloadKeepsOldOnError(self) -> None:
        """A reload that finds a bad file raises and keeps what was loaded."""
        path = self.pki.issue("d.pem", "default")
        certs = Certificates(default=path)
        before = certs.lookup(None)
        os.remove(path)
        self.assertRaises(ConfigError, certs.reload)
        self.assertIs(certs.lookup(None), before)
        self.pki.issue("d.pem", "default2")
        certs.reload()
        self.assertEqual(certs.lookup(None).certificate.get_subject().commonName, "default2")

    def test_adopt(self) -> None:
        """L{Certificates.adopt} takes another object's files and bumps the generation."""
        one = Certificates(default=self.pki.issue("one.pem", "one"))
        two = Certificates(default=self.pki.issue("two.pem", "two"), byHost={"a.example": self.pki.issue("a.pem", "a")})
        generation = one.generation
        one.adopt(two)
        self.assertGreater(one.generation, generation)
        self.assertEqual(one.lookup("a.example").certFile, self.pki.path("a.pem"))
        self.assertEqual(one.lookup(None).certFile, self.pki.path("two.pem"))

    def test_badClientCA(self) -> None:
        """A missing client CA file is named."""
        good = self.pki.issue("d.pem", "default")
        missing = self.pki.path("noca.pem")
        e = self.assertRaises(ConfigError, Certificates, default=good, clientCA=missing)
        self.assertNamesFile(e, missing, "No such file")
