"""API keys: created once and shown once, stored as a SHA-256 hash, looked up by hash.

Functions take a synchronous SQLAlchemy session; the web app calls them through
``AsyncSession.run_sync`` so the logic exists once.

Raises ``KeyError_`` subclasses: ``DuplicateKeyName``, ``UnknownKey``.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from assistant.db import ApiKey, utcnow

Role = Literal["chat", "admin"]
ROLES: tuple[Role, ...] = ("chat", "admin")
KEY_PREFIX = "sk-"


class KeyError_(Exception):
    """Base class of this module's errors."""


class DuplicateKeyName(KeyError_):
    pass


class UnknownKey(KeyError_):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, role: Role, policy: str | None = None) -> str:
    """Store a new key and return it in clear: the only time it is available."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise DuplicateKeyName(f"a key named {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, role=role, key_hash=hash_key(key), prefix=key[:10], policy=policy))
    session.commit()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, name: str) -> None:
    key = session.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
    if key is None:
        raise UnknownKey(f"no active key named {name!r}")
    key.revoked_at = utcnow()
    session.commit()


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The active key matching ``key``, or None."""
    found = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if found is None or found.revoked_at is not None:
        return None
    session.expunge(found)
    return found


def bootstrap_admin_key(session: Session, key_file: Path) -> bool:
    """On an empty key table, create an admin key and write it to ``key_file`` (mode 0600).

    Returns whether a key was created. The key itself is never logged.
    """
    if session.scalar(select(func.count()).select_from(ApiKey)):
        return False
    key = create_key(session, "admin", "admin")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600, exist_ok=True)
    key_file.write_text(key + "\n")
    return True
