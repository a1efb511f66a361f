"""Configuration: one settings class, read from the environment (prefix ``LOYALTY_``) when the app is built."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./loyalty.db"
    bootstrap_admin_key: str | None = Field(default=None, min_length=16)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    log_level: str = "INFO"
    # Region used to read phone numbers written without a country code (ISO 3166 alpha-2).
    default_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    # Idempotency records are kept this long (tills can be offline for days and retry when back).
    idempotency_ttl_days: int = Field(default=7, ge=7)
    # A request still marked in flight after this long is taken to have died with its process.
    idempotency_lock_seconds: int = Field(default=60, ge=1)
    # The secret key gift card PINs are hashed with (HMAC-SHA256). Kept outside the database, so that a copy of the
    # database alone does not let anyone try the short PINs offline. Gift cards cannot be issued or checked
    # without it; changing it invalidates every PIN issued before.
    gift_card_pin_key: str | None = Field(default=None, min_length=32, repr=False)
    # Failed code look-ups (unknown voucher codes, wrong gift-card PINs) allowed per API key and window.
    failed_lookup_limit: int = Field(default=10, ge=1, le=86_400)
    failed_lookup_window_seconds: int = Field(default=60, ge=1, le=86_400)
    # The largest request body read (a basket of 500 lines is about 100 kB, a program with 5,000 SKU multipliers
    # about 300 kB); a bigger one is refused with 413 before it is read whole.
    max_body_bytes: int = Field(default=1_048_576, ge=65_536)
    # Connections each process keeps open. A request beyond them opens one for itself and closes it afterwards, and a
    # fresh connection costs a TLS attempt, authentication and an empty prepared-statement cache: keep this at
    # least at the concurrent requests one process serves (32 tills over 2 workers: 16 each).
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    # How long `loyalty serve` keeps an idle keep-alive connection open. It must outlast the idle timeout of the
    # clients and proxies in front of it (HTTP client pools keep theirs 5 s, load balancers commonly 60 s): the side
    # that closes first races the other's next request on that connection, and a request sent into a connection
    # the server just closed fails with no answer at all. uvicorn's own default, 5 s, equals httpx's pool expiry:
    # replaying CDNOW through the API failed that way in about half the runs (no failure with 75 s).
    keep_alive_seconds: int = Field(default=75, ge=1, le=3600)
    # Deliver webhooks from inside every service process (off: run `loyalty deliver` separately).
    webhook_worker: bool = True
    # How long an idle delivery worker waits before it looks for new events again.
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)


def get_settings() -> Settings:
    return Settings()
