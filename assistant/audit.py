"""The safety audit trail: every block, mask and flag as a row; listed by admins with filters.

Functions take a synchronous session (the app calls them through ``AsyncSession.run_sync``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from assistant.db import SafetyEventRow
from safety.guard import SafetyEvent


def record_events(session: Session, key_name: str, events: list[SafetyEvent]) -> None:
    session.add_all(
        SafetyEventRow(
            key_name=key_name,
            direction=e.direction,
            check=e.finding.check,
            category=e.finding.category,
            rule=e.finding.rule,
            action=e.action,
            score=e.finding.score,
            excerpt=e.excerpt[:400],
        )
        for e in events
    )
    session.commit()


@dataclass(frozen=True)
class EventFilter:
    direction: str | None = None
    check: str | None = None
    category: str | None = None
    action: str | None = None
    key_name: str | None = None
    since: datetime | None = None


def list_events(
    session: Session, where: EventFilter, limit: int, before_id: int | None
) -> tuple[list[SafetyEventRow], bool]:
    """Newest first, ``limit`` rows older than ``before_id``; and whether more remain."""
    query = select(SafetyEventRow).order_by(SafetyEventRow.id.desc()).limit(limit + 1)
    for column in ("direction", "check", "category", "action", "key_name"):
        if (value := getattr(where, column)) is not None:
            query = query.where(getattr(SafetyEventRow, column) == value)
    if where.since is not None:
        query = query.where(SafetyEventRow.created_at >= where.since)
    if before_id is not None:
        query = query.where(SafetyEventRow.id < before_id)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit
