"""The service's tables (SQLAlchemy 2 typed models) and database helpers.

Schema changes go through Alembic (``alembic/versions``); ``migrate`` applies them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, Float, String, create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

REPO_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_DIR = REPO_ROOT / "alembic"

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    # SHA-256 of the key: keys are 256-bit random tokens, so a fast hash is safe (no dictionary to try).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    #: Name of the safety policy for this key's requests; None: the default policy.
    policy: Mapped[str | None] = mapped_column(String(100), default=None)


class SafetyEventRow(Base):
    """One block, mask or flag by the safety layer. Never holds PII: the excerpt is redacted."""

    __tablename__ = "safety_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    key_name: Mapped[str] = mapped_column(String(100), index=True)
    direction: Mapped[str] = mapped_column(String(10))
    check: Mapped[str] = mapped_column(String(20))
    category: Mapped[str] = mapped_column(String(50), index=True)
    rule: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(10))
    score: Mapped[float] = mapped_column(Float)
    excerpt: Mapped[str] = mapped_column(String(400))


def async_url(url: str) -> str:
    """The same database through an asyncio driver (aiosqlite, psycopg)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in _ASYNC_DRIVERS and parsed.drivername in (backend, f"{backend}+psycopg"):
        return parsed.set(drivername=_ASYNC_DRIVERS[backend]).render_as_string(hide_password=False)
    return url


def sync_engine(url: str) -> Engine:
    ensure_sqlite_dir(url)
    return create_engine(url)


def ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def migrate(url: str) -> None:
    """Bring the database to the newest schema (``alembic upgrade head``)."""
    from alembic.config import Config

    from alembic import command

    ensure_sqlite_dir(url)
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
