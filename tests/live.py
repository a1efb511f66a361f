"""The app, its lifespan entered, on an event loop of its own: for synchronous tests (Hypothesis' ``@given`` and
state machines) that talk to it in process through httpx, one request at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from service.app import create_app
from service.auth import service as auth_service
from service.program import service as program_service
from service.settings import Settings
from tests.conftest import ADMIN_KEY, GIFT_CARD_PIN_KEY, TravelClock, wipe

T = TypeVar("T")


class LiveApp:
    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        settings = Settings(database_url=database_url, bootstrap_admin_key=ADMIN_KEY, currency="USD",
                            log_level="WARNING", db_pool_size=5, gift_card_pin_key=GIFT_CARD_PIN_KEY,
                            webhook_worker=False)
        self.clock = TravelClock()
        self.app = create_app(settings, clock=self.clock, log=False)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test",
                                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        self._lifespan = self.app.router.lifespan_context(self.app)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.run(self.client.request(method, url, **kwargs))


@contextmanager
def live_app(database_url: str, table_names: list[str]) -> Iterator[LiveApp]:
    """A fresh app on emptied tables (as the ``app`` fixture makes), alive until the block ends."""
    asyncio.run(wipe(database_url, table_names))
    auth_service.forget_cached_keys()
    program_service.forget_cached()
    live = LiveApp(database_url)
    live.run(live._lifespan.__aenter__())
    try:
        yield live
    finally:
        live.run(live.client.aclose())
        live.run(live._lifespan.__aexit__(None, None, None))
        live.loop.close()
