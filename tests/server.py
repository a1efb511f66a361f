"""Run the real service (``loyalty serve``) in a subprocess, for tests that need several server processes."""

from __future__ import annotations

import asyncio
import os
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
