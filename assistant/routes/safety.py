"""``GET /v1/admin/safety/events``: the safety audit trail, for admin keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from assistant.audit import EventFilter, list_events
from assistant.auth import admin_only


class SafetyEventOut(BaseModel):
    id: int
    created_at: datetime
    key_name: str
    direction: str
    check: str
    category: str
    rule: str
    action: str
    score: float
    excerpt: str


class SafetyEventPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[SafetyEventOut]
    has_more: bool
    last_id: int | None


@get("/v1/admin/safety/events", guards=[admin_only], summary="Safety audit events, newest first")
async def safety_events(
    db_session: NamedDependency[AsyncSession],
    direction: FromQuery[Literal["input", "output"] | None] = None,
    check: FromQuery[str | None] = None,
    category: FromQuery[str | None] = None,
    action: FromQuery[Literal["block", "mask", "flag"] | None] = None,
    key_name: FromQuery[str | None] = None,
    since: FromQuery[datetime | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    after: Annotated[
        int | None, QueryParameter(description="Cursor: the last_id of the previous page.")
    ] = None,
) -> SafetyEventPage:
    where = EventFilter(direction, check, category, action, key_name, since)
    rows, has_more = await db_session.run_sync(list_events, where, limit, after)
    data = [SafetyEventOut.model_validate(row, from_attributes=True) for row in rows]
    return SafetyEventPage(data=data, has_more=has_more, last_id=data[-1].id if data else None)
