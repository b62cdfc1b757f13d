"""``GET /v1/models`` and the probes ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, delete, get
from litestar.datastructures import State
from litestar.params import FromPath

from assistant.auth import admin_only
from assistant.backends.base import Backend
from assistant.registry import ModelRegistry
from assistant.schemas import DeletedModel, ModelCard, ModelList


@get("/v1/models", summary="Models served here, fine-tuned ones included")
async def list_models(state: State) -> ModelList:
    registry: ModelRegistry = state.registry
    return ModelList(
        data=[
            ModelCard(
                id=m.name,
                created=int(m.created.timestamp()) if m.created else state.started_at,
                ready=m.ready,
                owned_by=m.owned_by,
            )
            for m in await registry.models()
        ]
    )


@delete("/v1/models/{model:str}", status_code=200, guards=[admin_only], summary="Delete a fine-tuned model")
async def delete_model(model: FromPath[str], state: State) -> DeletedModel:
    registry: ModelRegistry = state.registry
    await registry.delete(model)
    return DeletedModel(id=model)


@get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: every model is loaded")
async def readyz(state: State) -> Response[dict[str, Any]]:
    backends: dict[str, Backend] = state.backends
    await asyncio.gather(*(backend.check() for backend in backends.values()))
    waiting = {name: b.not_ready_reason for name, b in backends.items() if not b.ready}
    if state.guard is not None and not state.guard.ready:
        waiting["safety"] = state.get("safety_error", "the semantic detector is loading")
    if waiting:
        return Response(
            {"status": "not ready", "models": waiting}, status_code=503, headers={"Retry-After": "5"}
        )
    return Response({"status": "ready", "models": {name: "ready" for name in backends}})
