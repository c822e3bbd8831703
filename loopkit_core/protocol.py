"""The HTTP connection protocol: uvicorn's, with a deadline for each request head.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) but not one that never finishes its request
line and headers: a client sending half a head and then nothing held its socket forever, and enough of them
exhausted the server's file descriptors. Here every request head (from the connection's start, or from the first
byte after a response) must be complete within `header_timeout` seconds, or the connection is closed; and a
head may hold at most MAX_HEAD_BYTES (httptools has no limit of its own: a 36 MB header was read whole).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

# Request line and headers. Exporters and browsers send a few KiB, but the API's GET routes take long query strings
# (the schema fuzzer sends URLs of hundreds of KiB, which must reach the route and get its precise 400).
MAX_HEAD_BYTES = 1024 * 1024
_ANSWER = b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"


class _HeadDeadline:
    """Mixin over a uvicorn HTTP protocol; it sees a head complete when uvicorn starts a new request cycle."""

    header_timeout: float = 10.0
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        """Start the deadline for the first request head."""
        super().connection_made(transport)  # type: ignore[misc]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Feed uvicorn's parser; start the deadline at a new head's first byte, stop it when the head is done."""
        before = self.cycle
        idle = _idle(before)
        if self._head_timer is None and idle:
            self._arm()  # a further request on a kept-alive connection
        if idle:
            self._head_started = True
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before:
            self._disarm()
        elif idle and self._head_timer is not None:
            # The head is still incomplete, so every byte of this chunk was part of it.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._disarm()
                self._refuse(b"431 Request Header Fields Too Large", f"request head over {MAX_HEAD_BYTES} bytes")
        elif self._head_timer is None and _idle(self.cycle):
            # The rest of a body answered early (e.g. 401) ended in this chunk; a next head may have begun in it.
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._head_started = False
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # a response is still being sent (pipelining): uvicorn's keep-alive timer follows it
        if self._head_started:
            self._refuse(b"408 Request Timeout", f"request head did not arrive within {self.header_timeout:g} s")
        else:
            self.transport.close()

    def _refuse(self, status: bytes, message: str) -> None:
        body = message.encode()
        self.transport.write(_ANSWER % (status, len(body), body))
        self.transport.close()


def _idle(cycle: Any) -> bool:
    """No request on the connection, or the last one answered and its body read to the end."""
    return cycle is None or (cycle.response_complete and not cycle.more_body)


def http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools, else h11) with a `header_timeout` deadline per request head."""
    return type("LoopKitHTTPProtocol", (_HeadDeadline, AutoHTTPProtocol), {"header_timeout": header_timeout})
