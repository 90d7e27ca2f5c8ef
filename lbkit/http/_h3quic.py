# -*- test-case-name: tests.test_http3 -*-
"""
The server side of one QUIC connection: aioquic's C{QuicConnection} with
two changes lbkit needs, both made where aioquic has no public hook (so
they override its private methods; tests/test_http3.py checks each):

  - request-body flow control: a stream's receive window slides with what
    lbkit handed on instead of doubling whatever became of the bytes
    (C{ServerQuicConnection._write_stream_limits}, L{serverQuicConnection});
  - the certificate by SNI: the key pair the frontend's
    L{lbkit.tls.Certificates} hold for the server name of the client's
    ClientHello, as the TCP side chooses it (aioquic serves one
    certificate per configuration).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Optional

from lbkit.tls import Certificates

if TYPE_CHECKING:
    from aioquic.buffer import Buffer  # type: ignore[attr-defined]

    from lbkit.http._h3stream import H3Stream

__all__ = ["REQUEST_WINDOW", "serverQuicConnection", "KeyPairs"]

#: Request bytes of a stream a client may send beyond what lbkit has read of it.
REQUEST_WINDOW = 1024 * 1024


class KeyPairs:
    """
    The key pairs of a frontend's L{Certificates} as aioquic takes them
    (C{cryptography} objects), converted once per loaded pair.
    """

    def __init__(self, certs: Certificates) -> None:
        self.certs = certs
        self._converted: dict[int, tuple[Any, Any, list[Any]]] = {}

    def forName(self, serverName: Optional[str]) -> tuple[Any, Any, list[Any]]:
        """Private key, certificate and chain for C{serverName} (the default one for C{None})."""
        loaded = self.certs.lookup(serverName)
        found = self._converted.get(id(loaded))
        if found is None or found[0] is not loaded:
            found = (
                loaded,
                (loaded.privateKey.to_cryptography_key(), loaded.certificate.to_cryptography()),
                [c.to_cryptography() for c in loaded.extraCertChain],
            )
            self._converted[id(loaded)] = found
        _, (key, certificate), chain = found
        return key, certificate, chain


@functools.cache
def serverQuicConnection() -> Any:
    """
    The class of lbkit's side of a QUIC connection, C{ServerQuicConnection}
    (below), made at the first call: aioquic (with pylsqpack) is imported
    by the first frontend with C{http3=True} (L{lbkit.http._h3.H3Server}),
    not when lbkit is, so that a process without HTTP/3 does not pay its
    RSS (issue 11).
    """
    from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
    from aioquic.quic.packet import QuicFrameType
    from aioquic.tls import pull_client_hello

    class ServerQuicConnection(QuicConnection):
        """
        aioquic's C{QuicConnection} for lbkit's side of an HTTP/3 connection.

        The receive window of a stream grows only while C{held(streamId)} is
        false, and by sliding (what was read plus L{REQUEST_WINDOW}) rather
        than by aioquic's doubling, which grants a client more whenever it has
        sent past half of its window, whatever became of the bytes.

        @ivar streams: The connection's L{H3Stream}s by stream ID (set by it).
        @ivar keyPairs: Where the certificate for the ClientHello's server name
            comes from, or C{None} for the configuration's own.
        """

        streams: dict[int, H3Stream] = {}
        keyPairs: Optional[KeyPairs] = None

        def held(self, streamId: int) -> bool:
            """Whether stream C{streamId} holds request bytes its paused server connection has not taken."""
            stream = self.streams.get(streamId)
            return stream is not None and stream.waiting()

        def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
            # (replaces aioquic's private method, which writes MAX_STREAM_DATA)
            window = stream.max_stream_data_local
            if not window:
                return  # a stream of our own, one way: the client sends nothing on it
            offset = stream.receiver.highest_offset
            if window - offset < REQUEST_WINDOW // 2 and not self.held(stream.stream_id):
                stream.max_stream_data_local = window = offset + REQUEST_WINDOW
            if stream.max_stream_data_local_sent != window:
                buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA, capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                          handler=self._on_max_stream_data_delivery, handler_args=(stream,))
                buf.push_uint_var(stream.stream_id)
                buf.push_uint_var(window)
                stream.max_stream_data_local_sent = window

        def _initialize(self, peer_cid: bytes) -> None:
            # (extends aioquic's private method, which makes the TLS context)
            super()._initialize(peer_cid)
            if self.keyPairs is not None:
                context = self.tls
                handleHello = context._server_handle_hello
                keyPairs = self.keyPairs

                def chooseByName(input_buf: Buffer, initial_buf: Buffer, handshake_buf: Buffer) -> None:
                    start = input_buf.tell()
                    serverName = pull_client_hello(input_buf).server_name
                    input_buf.seek(start)
                    key, certificate, chain = keyPairs.forName(serverName)
                    context.certificate_private_key = key
                    context.certificate = certificate
                    context.certificate_chain = chain
                    handleHello(input_buf, initial_buf, handshake_buf)

                context._server_handle_hello = chooseByName  # type: ignore[method-assign]

    return ServerQuicConnection
