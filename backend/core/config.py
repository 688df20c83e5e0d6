"""Service settings from ``GENSCOPE_*`` environment variables (interfaces.md §5).

One :class:`Settings` class, validated when it is built: a bad configuration stops the service at
start-up with a message instead of failing on the first request. :func:`get_settings` is cached
and is the only place that reads the environment; tests swap it with
``app.dependency_overrides[get_settings]``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER_SCHEME = "sqla+sqlite"
_DB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")
_BROKER_SCHEMES = ("redis", "rediss", "sqla+sqlite", "sqla+postgresql", "amqp", "memory")


def default_data_dir() -> Path:
    """The per-user data directory: ``~/.genscope``."""
    return Path.home() / ".genscope"


class Settings(BaseSettings):
    """Everything the API and the worker can be configured with."""

    model_config = SettingsConfigDict(env_prefix="GENSCOPE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # default: SQLite file in data_dir
    broker_url: str | None = None  # default: the embedded SQLAlchemy/SQLite transport
    max_upload_mb: float = 2048
    auth: Literal["off", "tokens"] = "off"
    public_url: str | None = None  # base of share links; default: the request's base URL
    # web exposure (backend/core/exposure.py)
    allowed_hosts: str = ""  # comma-separated Host names served; "" = loopback + public_url's
    insecure_allow_remote_without_auth: bool = False  # serve beyond loopback with auth off

    run_queue: Literal["gpu", "cpu"] = "cpu"  # where the API sends new runs
    task_soft_time_limit: int = 3300  # seconds; the task fails the run cleanly
    task_time_limit: int = 3600  # seconds; the worker child is killed
    visibility_timeout: int = 7200  # seconds; Redis redelivers unacked messages after this
    lease_seconds: float = 30.0  # a running run's lease, renewed by the worker's heartbeat
    max_attempts: int = 3  # claims of one run before it fails as lost
    requeue_grace_seconds: float = 120.0  # a queued run older than this is re-sent on recovery
    recovery_interval_seconds: float = 15.0  # how often a worker looks for lost runs
    progress_interval_seconds: float = 0.5  # the least time between two progress writes
    inspect_timeout_seconds: float = 180.0  # checkpoint/dataset inspection subprocess
    torch_threads: int = 0  # intra-op threads of a worker child; 0 keeps torch's default
    max_runs_per_comparison: int = 20  # the compare page shows 2 to 20 runs
    # bounds of one request, checked before memory is held or anything is stored
    max_form_fields: int = Field(default=32, ge=1)  # parts of one multipart upload, file included
    max_form_kb: int = Field(default=1024, ge=1)  # text fields of one multipart upload, in total
    max_measure_memory_mb: int = Field(default=4096, ge=8)  # cap of memory-budget parameters
    max_measure_batch: int = Field(default=4096, ge=1)  # cap of batch/chunk-size parameters
    # the sandbox around every process that reads a user's file (backend/sandbox.py)
    sandbox: Literal["bwrap", "off"] = "bwrap"  # off: no sandbox, trusted single-user machine
    inspect_memory_mb: int = Field(default=4096, ge=64)  # RLIMIT_DATA of an inspection
    inspect_cpu_seconds: int = Field(default=300, ge=1)  # RLIMIT_CPU of an inspection
    run_memory_mb: int = Field(default=16384, ge=256)  # RLIMIT_DATA of a run's computation
    run_cpu_seconds: int = Field(default=0, ge=0)  # 0: task time limit x CPU cores
    max_inspections: int = Field(default=2, ge=1)  # concurrent inspections of the API
    inspect_queue_seconds: float = Field(default=10.0, ge=0)  # wait for a slot, then 503
    analysis_defaults: dict[str, int | str] = Field(
        default_factory=lambda: dict[str, int | str](
            seed=0, hessian_samples=1000, margin_samples=10_000
        ),
        description="run options used when a run request gives none",
    )

    @field_validator("max_upload_mb")
    @classmethod
    def _positive_upload(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("GENSCOPE_MAX_UPLOAD_MB must be > 0")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in _DB_SCHEMES:
            raise ValueError(
                f"GENSCOPE_DATABASE_URL must start with one of {', '.join(_DB_SCHEMES)}, "
                f"got {value.split(':', 1)[0]!r}"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in _BROKER_SCHEMES:
            raise ValueError(
                f"GENSCOPE_BROKER_URL must start with one of {', '.join(_BROKER_SCHEMES)}, "
                f"got {value.split(':', 1)[0]!r}"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"GENSCOPE_PUBLIC_URL must be an http(s) URL, got {value!r}")
            return value.rstrip("/")
        return value

    @model_validator(mode="after")
    def _time_limits(self) -> Settings:
        if not 0 < self.task_soft_time_limit < self.task_time_limit:
            raise ValueError(
                "GENSCOPE_TASK_SOFT_TIME_LIMIT must be > 0 and below GENSCOPE_TASK_TIME_LIMIT "
                f"({self.task_soft_time_limit} >= {self.task_time_limit})"
            )
        if self.visibility_timeout <= self.task_time_limit:
            raise ValueError(
                "GENSCOPE_VISIBILITY_TIMEOUT must exceed GENSCOPE_TASK_TIME_LIMIT, or the broker "
                "redelivers a run that is still being computed "
                f"({self.visibility_timeout} <= {self.task_time_limit})"
            )
        if self.lease_seconds <= 0 or self.max_attempts < 1:
            raise ValueError("GENSCOPE_LEASE_SECONDS must be > 0 and GENSCOPE_MAX_ATTEMPTS >= 1")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_form_bytes(self) -> int:
        return self.max_form_kb * 1024

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'genscope.sqlite'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or f"{EMBEDDED_BROKER_SCHEME}:///{self.data_dir / 'broker.sqlite'}"

    @property
    def embedded_broker(self) -> bool:
        return self.celery_broker_url.startswith(EMBEDDED_BROKER_SCHEME)

    def ensure_dirs(self) -> None:
        """Create the data directory and the blob store's folders."""
        for path in (self.data_dir, self.blob_dir, self.blob_dir / "tmp"):
            path.mkdir(parents=True, exist_ok=True)


def redact_url(url: str) -> str:
    """The URL without its password, for health answers and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
