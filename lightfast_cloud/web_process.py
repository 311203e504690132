"""One web process: uvicorn serving the ASGI application on the listening socket the launcher passed it."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ASGI_APPLICATION = "lightfast_cloud.asgi:application"


# A connection answered before its request body was read (the body cap's 413 from Content-Length)
# keeps reading and dropping what the client still sends, at most this long and this much, before
# it closes.
LINGER_S = 5.0
LINGER_MAX_BYTES = 512 * 1024 * 1024


class _LingeringClose:
    """The transport as one request's cycle sees it: `close()` with the body unread lingers instead.

    Closing a socket with unread data in it makes the kernel reset the connection, and a client
    still sending its body (aiohttp and others send the whole body before reading the answer) may
    then lose the answer that was already sent. Here the answer is followed by a half-close (FIN:
    the client reads the answer to its end) while the rest of the body is read and dropped
    (`LingeringHttpToolsProtocol.data_received`), and the connection closes once the client
    closes its side, or after LINGER_S / LINGER_MAX_BYTES.
    """

    def __init__(self, transport: asyncio.Transport, protocol: LingeringHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        cycle = self._protocol.cycle
        body_unread = cycle is not None and cycle.response_complete and cycle.more_body
        if not body_unread or self._transport.is_closing() or not self._transport.can_write_eof():
            self._transport.close()
            return
        self._protocol.linger()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()


class LingeringHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a lingering close for requests answered before their body."""

    lingering = False
    _lingered_bytes = 0
    _linger_timer: asyncio.TimerHandle | None = None

    def on_headers_complete(self) -> None:
        """The request's cycle sees the transport through `_LingeringClose`."""
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _LingeringClose(self.transport, self)  # type: ignore[assignment]

    def linger(self) -> None:
        """Half-close after the answer; drop the rest of the body; close on EOF or at the limits."""
        self.lingering = True
        self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        """While lingering: drop what arrives (nothing more is parsed on this connection)."""
        if not self.lingering:
            super().data_received(data)
            return
        self._lingered_bytes += len(data)
        if self._lingered_bytes > LINGER_MAX_BYTES:
            self.transport.close()

    def eof_received(self) -> None:
        """The client is done sending: a lingering connection closes now."""
        if self.lingering:
            self.transport.close()
            return
        super().eof_received()

    def on_response_complete(self) -> None:
        """A lingering connection takes no further request (no keep-alive, no pipelining)."""
        if self.lingering:
            self.server_state.total_requests += 1
            return
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the linger timer with the connection."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)


def web_config() -> uvicorn.Config:
    """uvicorn as every web process runs it (uvloop, httptools, the sans-I/O websockets protocol).

    The websockets protocol has flow control on send (a client that stops reading pauses its
    consumer, see execution.consumers) and no compression (its zlib state costs memory per
    connection; frames are small JSON). No proxy headers: the client address stays the socket's
    (any client could otherwise pick the IP its failed logins count against); the rate limits
    read X-Forwarded-For per LIGHTFAST_TRUSTED_PROXY_COUNT instead.
    """
    return uvicorn.Config(
        ASGI_APPLICATION,
        loop="uvloop",
        http=LingeringHttpToolsProtocol,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=1024 * 1024,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        lifespan="off",
        log_level="warning",
        # Open SSE streams and websockets get this long to end on SIGTERM.
        timeout_graceful_shutdown=5,
    )


def main(argv: list[str]) -> None:
    """`python -m lightfast_cloud.web_process FD`: serve on the inherited listening socket FD."""
    # socket(fileno=) reads the socket's real family; uvicorn's own `--fd` assumes a unix socket,
    # so accepted TCP connections would keep Nagle's algorithm (40 ms stalls on small writes).
    listener = socket.socket(fileno=int(argv[1]))
    uvicorn.Server(web_config()).run(sockets=[listener])


if __name__ == "__main__":
    main(sys.argv)
