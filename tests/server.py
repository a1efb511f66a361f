"""Run the real service (``loyalty serve``) in a subprocess, for tests that need several server processes."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service import cli
from tests.conftest import ADMIN_KEY, GIFT_CARD_PIN_KEY

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(database_url: str, env: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "LOYALTY_DATABASE_URL": database_url, "LOYALTY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "LOYALTY_GIFT_CARD_PIN_KEY": GIFT_CARD_PIN_KEY, "LOYALTY_WEBHOOK_WORKER": "false",
            "LOYALTY_LOG_LEVEL": "WARNING", **(env or {})}


@contextmanager
def running_server(database_url: str, *, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """Serve on a free port with ``workers`` processes, as ``loyalty serve`` does; yield the base URL; stop the
    server (gracefully: SIGTERM) at the end. The processes are forked from :class:`Zygote`, which has imported the
    service once for the whole run: a start takes a fraction of a second where three fresh interpreters took five
    (uvicorn's workers are spawned, and each imports the service again)."""
    group = Zygote.shared().start(free_port(), workers, _environment(database_url, env))
    try:
        group.wait_until_ready()
        yield group.base
    finally:
        group.stop()


@contextmanager
def served_command(database_url: str, *, workers: int = 2) -> Iterator[str]:
    """``loyalty serve --workers N`` itself in a subprocess (uvicorn's own supervisor and spawned workers), for
    the test that the command serves and for the bench; other tests use the quicker :func:`running_server`."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="loyalty-server-", suffix=".log")[1])
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--no-migrate", "--port", str(port), "--workers",
             str(workers)], cwd=ROOT, env=_environment(database_url, None), stdout=out, stderr=out,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base, lambda: process.poll() is None, workers, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


# The parent of the tests' servers. It imports the service once; each start forks a fresh process group (the
# "master", which binds the port, and its uvicorn workers, forked from it, each running what ``loyalty serve``'s
# workers run). It reads one JSON line per start (port, workers, environment, log file) and answers the master's
# pid, which is the group's id. The master passes SIGTERM on to its workers and exits once they have.
_ZYGOTE = r"""
import json, os, signal, socket, sys, time
import uvicorn
import service.app  # noqa: F401  (what a start saves: the imports)
from service import cli
from service.settings import Settings

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # masters are reaped by the kernel


def serve_group(port, workers, env, log):
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    out = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.environ.clear()
    os.environ.update(env)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(100):  # a killed group's socket may take a moment to go
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.05)
    sock.listen(2048)
    children = []
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(pid, signal.SIGTERM) for pid in children])
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            config = uvicorn.Config(cli.SERVED_APP, **cli.uvicorn_options(Settings()))
            uvicorn.Server(config).run(sockets=[sock])
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    os._exit(0)


for line in sys.stdin:
    start = json.loads(line)
    pid = os.fork()
    if pid == 0:
        serve_group(start["port"], start["workers"], start["env"], start["log"])
    print(pid, flush=True)
"""


class Zygote:
    """The one process the tests' servers are forked from (:data:`_ZYGOTE`), started on first use."""

    _shared: Zygote | None = None

    @classmethod
    def shared(cls) -> Zygote:
        if cls._shared is None:
            cls._shared = cls()
            atexit.register(cls._shared.close)
        return cls._shared

    def __init__(self) -> None:
        self.log = Path(tempfile.mkstemp(prefix="loyalty-zygote-", suffix=".log")[1])
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-c", _ZYGOTE], cwd=ROOT, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        self.lock = threading.Lock()

    def start(self, port: int, workers: int, env: dict[str, str]) -> ServerGroup:
        log = Path(tempfile.mkstemp(prefix="loyalty-server-", suffix=".log")[1])
        with self.lock:
            assert self.process.stdin and self.process.stdout
            try:
                self.process.stdin.write(json.dumps({"port": port, "workers": workers, "env": env,
                                                     "log": str(log)}) + "\n")
                self.process.stdin.flush()
                answer = self.process.stdout.readline()
            except BrokenPipeError:
                answer = ""
            if not answer:
                raise RuntimeError(f"the server zygote exited: {self.log.read_text()[-2000:]}")
        return ServerGroup(int(answer), port, workers, log)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.unlink(missing_ok=True)


@dataclass
class ServerGroup:
    """One start of the service: a master process and its workers, in a process group of their own."""

    pid: int
    port: int
    workers: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_until_ready(self) -> None:
        _wait_until_ready(self.base, self.alive, self.workers, self.log)

    def kill(self) -> None:
        """SIGKILL to every process of the group at once; its log goes."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.log.unlink(missing_ok=True)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the master, which passes it on; SIGKILL to the group if it has not gone within ``timeout``."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill()


class KillableServer:
    """The service with ``workers`` uvicorn worker processes on one port, which a test can kill with SIGKILL
    (master and workers at once, as a power cut or the OOM killer of a container would: in-flight requests and
    database sessions die, clients meet refused connections) and start again."""

    def __init__(self, database_url: str, *, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = _environment(database_url, {"LOYALTY_WEBHOOK_WORKER": "true", **(env or {})})
        self.group: ServerGroup | None = None
        self.kills = 0

    def start(self) -> None:
        self.group = Zygote.shared().start(self.port, self.workers, self.env)
        self.group.wait_until_ready()

    def kill(self) -> None:
        """SIGKILL to every process of the server at once (the next start waits for the port to be free)."""
        assert self.group is not None
        self.group.kill()
        self.group = None
        self.kills += 1

    def stop(self) -> None:
        if self.group is not None:
            self.kill()


def _wait_until_ready(base: str, alive: Callable[[], bool], workers: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                time.sleep(0.3 * workers)  # let every worker finish its start-up
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready within 30 s")


async def run_cli(*argv: str) -> int:
    """``loyalty …`` in-process (in a thread: the command runs its own event loop). Pair with the ``cli_env``
    fixture, which points the command at the test database."""
    return await asyncio.to_thread(cli.main, list(argv))
