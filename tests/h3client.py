"""
A real HTTP/3 client for the tests: aioquic's own asyncio client, run in
its own event loop on a thread (callers use C{deferToThread}).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Optional, Sequence

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamReset


class Answer:
    """One HTTP/3 response: status, headers (lower-case names), body; or the reset code."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.reset: Optional[int] = None
        self.done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.answers: dict[int, Answer] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.answers:
            answer = self.answers[event.stream_id]
            answer.reset = event.error_code
            if not answer.done.done():
                answer.done.set_result(answer)
        for h3event in self.h3.handle_event(event):
            answer = self.answers.get(getattr(h3event, "stream_id", -1))
            if answer is None:
                continue
            if isinstance(h3event, HeadersReceived):
                for name, value in h3event.headers:
                    if name == b":status":
                        answer.status = int(value)
                    else:
                        answer.headers[name] = value
            elif isinstance(h3event, DataReceived):
                answer.body += h3event.data
            if getattr(h3event, "stream_ended", False) and not answer.done.done():
                answer.done.set_result(answer)

    def request(self, method: bytes, path: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes,
                authority: bytes) -> Answer:
        sid = self._quic.get_next_available_stream_id()
        answer = self.answers[sid] = Answer()
        self.h3.send_headers(sid, [(b":method", method), (b":scheme", b"https"), (b":authority", authority),
                                   (b":path", path), *headers], end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        self.transmit()
        return answer


async def _fetch(port: int, requests: Sequence[tuple[Any, ...]], cafile: Optional[str], serverName: str,
                 timeout: float) -> list[Answer]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=serverName)
    if cafile is None:
        config.verify_mode = ssl.CERT_NONE
    else:
        config.load_verify_locations(cafile)
    async with connect("127.0.0.1", port, configuration=config, create_protocol=_Client) as client:
        assert isinstance(client, _Client)
        answers = []
        for method, path, *rest in requests:
            headers = rest[0] if rest else ()
            body = rest[1] if len(rest) > 1 else b""
            answers.append(client.request(method, path, headers, body, f"{serverName}:{port}".encode()))
        await asyncio.wait_for(asyncio.gather(*(a.done for a in answers)), timeout)
        return answers


def fetch(port: int, requests: Sequence[tuple[Any, ...]], cafile: Optional[str] = None,
          serverName: str = "localhost", timeout: float = 10.0) -> list[Answer]:
    """
    Send C{requests} (C{(method, path[, headers[, body]])}) at once on one
    QUIC connection to 127.0.0.1:C{port}; their answers, in order.
    """
    return asyncio.run(_fetch(port, requests, cafile, serverName, timeout))
