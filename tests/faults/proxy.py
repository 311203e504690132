"""A TCP proxy a fault test puts between the stack and a server (PostgreSQL, redis) to take it away: `pause`
stops forwarding (connections stay open, nothing answers, as a SIGSTOPped server), `refuse` resets every
connection and refuses new ones (as a server that is down), `restore` undoes either."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket


@dataclass
class TcpProxy:
    """Listens on 127.0.0.1:`port`, forwards each connection to `target` (a (host, port) or a unix path)."""

    target: tuple[str, int] | str
    port: int = 0
    _listener: socket.socket | None = None
    _pairs: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _flowing: threading.Event = field(default_factory=threading.Event)
    _closed: bool = False

    def start(self) -> TcpProxy:
        """Listen (on a free port the first time) and serve in a daemon thread."""
        self._flowing.set()
        self._listen()
        return self

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(512)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="fault-proxy", daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            upstream = socket.socket()
        upstream.connect(self.target)
        return upstream

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse() or stop()
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), name="fault-proxy-pump", daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        sockets = [pair.client, pair.upstream]
        try:
            while True:
                self._flowing.wait()
                readable, _, _ = select.select(sockets, [], [], 0.1)
                if not self._flowing.is_set():
                    continue  # paused after select: leave the bytes where they are
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (pair.upstream if source is pair.client else pair.client).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            self._drop(pair)

    def _drop(self, pair: _Pair, *, reset: bool = False) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(OSError):
                if reset:  # RST rather than FIN: the peer sees the connection torn down
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def pause(self) -> None:
        """Stop forwarding: every connection, old and new, hangs until `restore`."""
        self._flowing.clear()

    def refuse(self) -> None:
        """Reset every connection and refuse new ones until `restore`."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair, reset=True)

    def restore(self) -> None:
        """Forward again (and listen again after `refuse`)."""
        if self._listener is None and not self._closed:
            self._listen()
        self._flowing.set()

    def stop(self) -> None:
        """Close everything for good."""
        self._closed = True
        self.refuse()
        self._flowing.set()
