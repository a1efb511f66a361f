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
    # Failed code look-ups (unknown voucher codes, wrong gift-card PINs) allowed per API key and window.
    failed_lookup_limit: int = Field(default=10, ge=1)
    failed_lookup_window_seconds: int = Field(default=60, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)


def get_settings() -> Settings:
    return Settings()
