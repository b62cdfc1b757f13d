"""``GET /v1/models`` and the probes ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import State

from assistant.backends.base import Backend
from assistant.schemas import ModelCard, ModelList


@get("/v1/models", summary="Models served here")
async def list_models(state: State) -> ModelList:
    backends: dict[str, Backend] = state.backends
    created = state.started_at
    return ModelList(
        data=[ModelCard(id=name, created=created, ready=b.ready) for name, b in backends.items()]
    )


@get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: every model is loaded")
async def readyz(state: State) -> Response[dict[str, Any]]:
    backends: dict[str, Backend] = state.backends
    waiting = {name: b.not_ready_reason for name, b in backends.items() if not b.ready}
    if state.guard is not None and not state.guard.ready:
        waiting["safety"] = state.get("safety_error", "the semantic detector is loading")
    if waiting:
        return Response(
            {"status": "not ready", "models": waiting}, status_code=503, headers={"Retry-After": "5"}
        )
    return Response({"status": "ready", "models": {name: "ready" for name in backends}})
