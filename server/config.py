"""Configuration: environment variables only (and an optional `.env`), names as in SPEC Appendix B."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.billing.config import BillingSettings


class Settings(BillingSettings, BaseSettings):
    """Every setting, read once from the environment (and `.env`). The layers below get plain frozen
    objects made from it (`billing()`, and the ones server/app.py builds), never this class."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False, frozen=True)

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./.data")
    database_url: str | None = None
    db_pool_min: int = 1
    db_pool_max: int = 10
    redis_url: str | None = None
    # Prefix for every Redis key and the Socket.IO channel, so several deployments (or test runs)
    # can share one Redis.
    redis_prefix: str = "parlor"

    jwt_secret: SecretStr | None = None
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_days: int = 30
    # A rotated refresh token presented again within this many seconds returns the same new pair
    # (two tabs or a retried request refreshing at once); later, it counts as reuse.
    refresh_reuse_grace_seconds: float = Field(default=30.0, ge=0)

    ai_provider: Literal["gemini", "openai", "demo"] | None = None
    gemini_api_key: SecretStr | None = None
    gemini_model: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None

    # AI replies: timeouts, retries (before the first token only), coalescing, prompt budget.
    ai_timeout_seconds: float = 60.0
    ai_first_token_timeout_seconds: float = 30.0
    ai_idle_timeout_seconds: float = 30.0
    ai_max_attempts: int = Field(default=3, ge=1)
    ai_coalesce_ms: int = Field(default=25, ge=0)
    ai_context_tokens: int = Field(default=6000, ge=256)
    ai_max_output_tokens: int = Field(default=1024, ge=16)
    ai_knowledge_chunks: int = Field(default=4, ge=0)
    ai_stream_retention_seconds: int = Field(default=600, ge=10)
    # A reply's owner renews its lease while it streams; an expired lease (the process died) lets any
    # process end the reply: within about 1.25 x this after the owner stopped.
    ai_lease_seconds: float = Field(default=10.0, ge=1, le=300)
    # Use python-socketio's own websocket transport instead of Parlor's (realtime/transport.py), as when
    # the installed library versions are not the tested ones.
    library_transport: bool = False
    demo_token_delay_ms: int = Field(default=30, ge=0)

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None

    firebase_credentials: Path | None = None
    # FCM HTTP v1 endpoint base (proxies, the tests' fake); push is off without FIREBASE_CREDENTIALS.
    fcm_base_url: str = "https://fcm.googleapis.com"
    # Tries of one push to a device on 429/5xx (backoff 2 s doubling, or FCM's Retry-After).
    push_max_attempts: int = Field(default=5, ge=1, le=20)

    # Background jobs: run by each server process (0: none here; `python -m server worker` runs them).
    jobs_concurrency: int = Field(default=4, ge=0, le=256)
    # Jobs one user may have queued or running at once (429 `too_many_jobs` beyond; 0: no limit).
    jobs_max_in_flight: int = Field(default=5, ge=0)
    # Longest wait of an idle worker before it looks for due jobs (new jobs wake it at once).
    jobs_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # How long a job's result file and link are kept; the scheduler removes them after.
    job_result_ttl_hours: int = Field(default=168, ge=1)
    # This server's public address for links made without a request (job results); unset: a path.
    public_base_url: str = ""
    # Needed to verify Firebase ID tokens when no service-account file is given (emulator, tests).
    firebase_project_id: str | None = None

    upload_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    image_max_side: int = Field(default=2048, ge=16)
    image_max_pixels: int = Field(default=40_000_000, ge=1)
    # Processes that decode and re-encode images (a pool beside the event loop; 0: one per CPU, at most 4).
    image_workers: int = Field(default=0, ge=0)
    upload_rate_per_minute: int = Field(default=30, ge=1)
    # S3-compatible blob store (AWS S3, MinIO, Cloudflare R2); unset: a folder under DATA_DIR.
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # Largest JSON body a REST endpoint accepts (uploads have their own limit).
    json_max_bytes: int = 256 * 1024

    free_daily_messages: int = 10
    free_max_personas: int = 2
    free_history_days: int = 7
    free_storage_mb: int = 100
    premium_daily_messages: int = 0
    premium_max_personas: int = 0
    premium_history_days: int = 0
    premium_storage_mb: int = 5120

    message_max_chars: int = 8000
    send_rate_per_minute: int = 60
    login_rate_per_minute: int = 10
    # Failed logins per account from all addresses together: the ceiling against distributed guessing.
    login_account_rate_per_hour: int = 100
    register_rate_per_hour: int = 20

    admin_emails: str = ""
    cors_origins: str = "*"
    # Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed, e.g. nginx in front.
    trusted_proxies: str = ""
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    shutdown_timeout_seconds: float = 10.0
    # Accept queue: a reconnect storm of thousands of sockets overflows the default 128.
    listen_backlog: int = Field(default=2048, ge=16)
    # Freeze the start-up heap out of the garbage collector and collect less often (see __main__).
    gc_tuning: bool = True
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)

    @field_validator(
        "database_url",
        "redis_url",
        "gemini_base_url",
        "openai_base_url",
        "openai_model",
        "ai_provider",
        "gemini_api_key",
        "openai_api_key",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "stripe_api_base",
        "firebase_credentials",
        "firebase_project_id",
        "jwt_secret",
        "s3_bucket",
        "s3_endpoint_url",
        "s3_region",
        "s3_access_key_id",
        "s3_secret_access_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in self.trusted_proxies.split(",") if p.strip()
        )

    @property
    def admin_email_set(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.admin_emails.split(",") if e.strip())

    @property
    def resolved_ai_provider(self) -> str:
        if self.ai_provider:
            return self.ai_provider
        return "gemini" if self.gemini_api_key else "demo"

    def billing(self) -> BillingSettings:
        """The billing part of the settings, as the billing services take it."""
        return BillingSettings.model_validate({name: getattr(self, name) for name in BillingSettings.model_fields})
