"""``/v1/admin/keys``: API key management for admin keys (the CLI's ``keys`` commands, over HTTP)."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from assistant import keys
from assistant.auth import admin_only
from assistant.errors import ApiError


class KeyOut(BaseModel):
    name: str
    role: str
    prefix: str
    policy: str | None
    created_at: datetime
    revoked_at: datetime | None


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: keys.Role = "chat"
    policy: str | None = Field(None, description="Safety policy name; None: the default policy.")


class CreatedKey(KeyOut):
    key: str = Field(description="The key in clear, shown only in this response.")


class KeysController(Controller):
    path = "/v1/admin/keys"
    guards = [admin_only]  # noqa: RUF012 - Litestar's declared attribute

    @get("/", summary="List API keys (hashes are never shown)")
    async def list_keys(self, db_session: NamedDependency[AsyncSession]) -> list[KeyOut]:
        found = await db_session.run_sync(keys.list_keys)
        return [KeyOut.model_validate(k, from_attributes=True) for k in found]

    @post("/", summary="Create an API key")
    async def create_key(
        self, data: JSONBody[NewKey], db_session: NamedDependency[AsyncSession], state: State
    ) -> CreatedKey:
        if data.policy is not None and data.policy not in state.policies:
            known = ", ".join(sorted(state.policies))
            raise ApiError(400, f"no policy named {data.policy!r}; known: {known}", param="policy")
        try:
            key = await db_session.run_sync(keys.create_key, data.name, data.role, data.policy)
        except keys.DuplicateKeyName as exc:
            raise ApiError(400, str(exc), param="name", code="duplicate_name") from exc
        created = next(k for k in await db_session.run_sync(keys.list_keys) if k.name == data.name)
        return CreatedKey(**KeyOut.model_validate(created, from_attributes=True).model_dump(), key=key)

    @delete("/{name:str}", summary="Revoke an API key", status_code=204)
    async def revoke_key(self, name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
        try:
            await db_session.run_sync(keys.revoke_key, name)
        except keys.UnknownKey as exc:
            raise ApiError(404, str(exc), param="name", code="key_not_found") from exc
