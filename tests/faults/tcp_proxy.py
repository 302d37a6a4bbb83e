"""A TCP forwarder on 127.0.0.1 that can go away and come back on the same port: how a test takes an S3 endpoint
away mid-upload (open connections reset, new ones reset at once) and brings it back with its data intact.
While it is away it counts the clients' attempts, so a test can bring it back on an event (the client tried
again), not after a guessed time."""

from __future__ import annotations

import socket
import struct
import threading


class Proxy:
    def __init__(self, target_port: int, port: int = 0):
        self.target_port = target_port
        self.upstream_bytes = 0  # bytes forwarded towards the target since the proxy was made
        self.crossed = threading.Event()
        self._threshold: int | None = None
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = port
        self.down = False
        self.attempts_while_down = 0
        self.retried = threading.Event()  # a client connected while the endpoint was away
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, upstream_bytes: int) -> threading.Event:
        """An event set once this many more bytes have gone upstream (the middle of an upload)."""
        with self._lock:
            self._threshold = self.upstream_bytes + upstream_bytes
            self.crossed.clear()
        return self.crossed

    def go_away(self) -> None:
        """The endpoint goes away: every open connection reset, every new one reset as it arrives."""
        self.down = True
        self.retried.clear()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            _reset(conn)

    def come_back(self) -> None:
        self.down = False

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.down:
                self.attempts_while_down += 1
                self.retried.set()
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if upstream:
                    with self._lock:
                        self.upstream_bytes += len(data)
                        if self._threshold is not None and self.upstream_bytes >= self._threshold:
                            self.crossed.set()
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass


def _reset(conn: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as the peer of a vanished host sees it."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass
