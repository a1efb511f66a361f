"""Run the real service (``loyalty serve``) in a subprocess, for tests that need several server processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from service import cli
from tests.conftest import ADMIN_KEY, GIFT_CARD_PIN_KEY

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(database_url: str, *, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """Serve on a free port with ``workers`` processes; yield the base URL; stop the server at the end."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="loyalty-server-", suffix=".log", delete=False)  # noqa: SIM115
    environment = {**os.environ, "LOYALTY_DATABASE_URL": database_url, "LOYALTY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                   "LOYALTY_GIFT_CARD_PIN_KEY": GIFT_CARD_PIN_KEY, "LOYALTY_WEBHOOK_WORKER": "false",
                   "LOYALTY_LOG_LEVEL": "WARNING", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--no-migrate", "--port", str(port), "--workers",
         str(workers)], cwd=ROOT, env=environment, stdout=log, stderr=log,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base, process, workers, Path(log.name))
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


# The parent of every server a crash test kills. It imports the service once; each start forks a fresh process
# group (the "master", which binds the port, and its uvicorn workers, forked from it), so that a restart takes a
# fraction of a second instead of the seconds three fresh interpreters need to import it. It reads one line per
# start from stdin and answers the new group's id.
_ZYGOTE = r"""
import os, signal, socket, sys, time
import uvicorn
import service.app  # noqa: F401  (what a restart saves: the imports)

port, workers = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed groups are reaped by the kernel


def serve_group():
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(100):  # the killed group's socket may take a moment to go
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.05)
    sock.listen(2048)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            config = uvicorn.Config("service.app:serve_app", factory=True, log_config=None, access_log=False,
                                    proxy_headers=True)
            uvicorn.Server(config).run(sockets=[sock])
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    os._exit(0)


for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        serve_group()
    print(pid, flush=True)
"""


class KillableServer:
    """The service with ``workers`` uvicorn worker processes on one port, which a test can kill with SIGKILL
    (master and workers at once, as a power cut or the OOM killer of a container would: in-flight requests and
    database sessions die, clients meet refused connections) and start again."""

    def __init__(self, database_url: str, *, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log = Path(tempfile.mkstemp(prefix="loyalty-crash-", suffix=".log")[1])
        environment = {**os.environ, "LOYALTY_DATABASE_URL": database_url, "LOYALTY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                       "LOYALTY_LOG_LEVEL": "WARNING", **(env or {})}
        with self.log.open("ab") as log:
            self.zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE, str(self.port), str(workers)], cwd=ROOT,
                                           env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=log, text=True, start_new_session=True)
        self.group: int | None = None
        self.kills = 0

    def start(self) -> None:
        assert self.zygote.stdin and self.zygote.stdout
        self.zygote.stdin.write("start\n")
        self.zygote.stdin.flush()
        self.group = int(self.zygote.stdout.readline())
        _wait_until_ready(self.base, self.zygote, self.workers, self.log)

    def kill(self) -> None:
        """SIGKILL to every process of the server at once."""
        assert self.group is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.group, signal.SIGKILL)  # the next start waits for the port to be free
        self.group = None
        self.kills += 1

    def stop(self) -> None:
        if self.group is not None:
            self.kill()
        self.zygote.kill()
        self.zygote.wait()
        self.log.unlink(missing_ok=True)


def _wait_until_ready(base: str, process: subprocess.Popen, workers: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
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
