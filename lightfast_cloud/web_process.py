"""One web process: uvicorn serving the ASGI application on the listening socket the launcher passed it."""

from __future__ import annotations

import socket
import sys

import uvicorn

ASGI_APPLICATION = "lightfast_cloud.asgi:application"


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
        http="httptools",
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
