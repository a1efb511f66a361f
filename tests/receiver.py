"""Tiny HTTP receivers for webhook tests: one records every request and answers with the status the test sets;
one sends its answer a byte at a time."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    status: int = 200
    failing_events: set[str] = field(default_factory=set)  # answered with 500 whatever ``status`` says
    delay: float = 0.0  # seconds before answering (a slow receiver)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event_ids(self) -> list[str]:
        with self.lock:
            return [r.event["id"] for r in self.requests]


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(receiver.delay)
            failing = json.loads(body or b"{}").get("id") in receiver.failing_events
            self.send_response(500 if failing else receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            return

    class Server(ThreadingHTTPServer):
        request_queue_size = 64  # a worker's 20 connections at once are accepted, none waits for a SYN retry

    server = Server(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def dribbling(answer: bytes, *, step: float, at_once: int = 0) -> Iterator[tuple[str, list[float]]]:
    """A raw HTTP receiver that reads each request, then sends ``answer`` (status line, headers, body): its first
    ``at_once`` bytes at once, the rest one byte every ``step`` seconds (httpx's timeouts bound each read, not
    the whole answer). Yields its URL and the ``time.monotonic()`` of each request's arrival."""
    arrivals: list[float] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(rest) < length:
                rest += conn.recv(65536)
            arrivals.append(time.monotonic())
            try:
                conn.sendall(answer[:at_once])
                for i in range(at_once, len(answer)):
                    if stop.wait(step):
                        return
                    conn.sendall(answer[i:i + 1])
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hooks", arrivals
    finally:
        stop.set()
        listener.close()
