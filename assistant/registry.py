"""Which backend serves a model name: the configured models, and fine-tuned models loaded on demand.

A fine-tuned model (``ft:...``, a row written by a finished job) is loaded on its first chat and kept
while it is among the ``max_loaded`` most recently used; deleting it unloads it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from assistant.backends.base import Backend, BackendNotReady
from finetune import jobs


class UnknownModel(Exception):
    pass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    created: datetime | None  # None: a configured model (up since the service started)
    ready: bool
    owned_by: str


class ModelRegistry:
    def __init__(
        self,
        configured: dict[str, Backend],
        sessions: async_sessionmaker[AsyncSession],
        load: Callable[[str], Backend],
        max_loaded: int,
    ) -> None:
        self.configured, self._sessions, self._load, self._max_loaded = configured, sessions, load, max_loaded
        self._loaded: OrderedDict[str, Backend] = OrderedDict()
        self._loading = asyncio.Lock()

    def serving(self) -> dict[str, Backend]:
        """The configured backends and the fine-tuned models loaded now, by name."""
        return {**self.configured, **self._loaded}

    async def get(self, name: str) -> Backend:
        if name in self.configured:
            return self.configured[name]
        async with self._loading:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            async with self._sessions() as session:
                row = await session.run_sync(jobs.find_model, name)
            if row is None:
                served = ", ".join(sorted(self.configured)) or "none"
                raise UnknownModel(
                    f"model {name!r} is not served here; models: {served} "
                    "and the fine-tuned ones in GET /v1/models"
                )
            backend = self._load(row.path)
            await backend.start()
            if not backend.ready:
                raise BackendNotReady(f"{name}: {backend.not_ready_reason}")
            self._loaded[name] = backend
            while len(self._loaded) > self._max_loaded:
                _, evicted = self._loaded.popitem(last=False)
                await evicted.close()
            return backend

    async def models(self) -> list[ModelInfo]:
        async with self._sessions() as session:
            rows = await session.run_sync(jobs.list_models)
        return [ModelInfo(n, None, b.ready, "assistant") for n, b in self.configured.items()] + [
            ModelInfo(r.id, r.created_at, True, "fine-tune") for r in rows
        ]

    async def delete(self, name: str) -> None:
        if name in self.configured:
            raise UnknownModel(
                f"model {name!r} is configured, not fine-tuned; only ft: models can be deleted"
            )
        async with self._loading:
            async with self._sessions() as session:
                await session.run_sync(jobs.delete_model, name)
            backend = self._loaded.pop(name, None)
        if backend is not None:
            await backend.close()

    async def close(self) -> None:
        for backend in self._loaded.values():
            await backend.close()
        self._loaded.clear()
