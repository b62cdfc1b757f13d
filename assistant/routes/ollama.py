"""Ollama's API on this service: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/show`` and
``/api/version``.

Tools built for Ollama (and the official ``ollama`` client) use this service as they would an Ollama
server: same request fields, newline-delimited JSON streaming, the same final statistics
(``eval_count``, ``eval_duration``, ``done_reason``...) and errors as ``{"error": "..."}``. Requests go
through the same pipeline as the OpenAI API (``start_chat``): safety, style, glossary, API keys, and
fine-tuned models by their ``ft:`` name. Our extensions ``style`` and ``terms`` may be given at the top
level or inside ``options`` (the only place the ``ollama`` client can put them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.response import Stream
from pydantic import ValidationError

from assistant.backends.base import BackendNotReady, ModelDescription
from assistant.chat import Delta, Done
from assistant.db import ApiKey
from assistant.errors import OLLAMA_EXCEPTION_HANDLERS, ApiError
from assistant.ollama_export import ExportError, modelfile_for
from assistant.ollama_schemas import (
    ModelRequest,
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaOptions,
    OllamaRequest,
)
from assistant.registry import ModelRegistry
from assistant.routes.chat import start_chat
from assistant.schemas import ChatCompletionRequest
from finetune.modelfile import Modelfile

log = logging.getLogger(__name__)

#: The Ollama release whose API these routes follow (``GET /api/version``); clients gate features on it.
OLLAMA_API_VERSION = "0.12.0"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _as_chat_request(request: OllamaRequest, messages: list[dict[str, str]]) -> ChatCompletionRequest:
    options = request.options or OllamaOptions()
    fields: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "stream": request.stream,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "seed": options.seed,
        "max_tokens": options.num_predict if options.num_predict and options.num_predict > 0 else None,
        "stop": options.stop or None,
        "style": request.style or options.style,
        "terms": request.terms if request.terms is not None else options.terms,
    }
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        where = {"max_tokens": "options.num_predict", "stop": "options.stop"}.get(where, where)
        raise ApiError(400, f"{where}: {first['msg']}", param=where) from exc


class _Clock:
    """Ollama's durations, in nanoseconds: prompt evaluation until the first text, then generation."""

    def __init__(self) -> None:
        self.started = time.perf_counter_ns()
        self.first_text: int | None = None

    def saw_text(self) -> None:
        if self.first_text is None:
            self.first_text = time.perf_counter_ns()

    def statistics(self, done: Done) -> dict[str, Any]:
        ended = time.perf_counter_ns()
        first = self.first_text or ended
        return {
            "done_reason": done.finish_reason,
            "total_duration": ended - self.started,
            "load_duration": 0,
            "prompt_eval_count": done.usage.prompt_tokens,
            "prompt_eval_duration": first - self.started,
            "eval_count": done.usage.completion_tokens,
            "eval_duration": ended - first,
        }


Shape = Callable[[str], dict[str, Any]]


def _chat_shape(text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}}


def _generate_shape(text: str) -> dict[str, Any]:
    return {"response": text}


async def _answer(
    data: ChatCompletionRequest, state: State, key: ApiKey, shape: Shape
) -> Response[dict[str, Any]] | Stream:
    clock = _Clock()
    first, events = await start_chat(data, state, key)
    if not data.stream:
        texts: list[str] = []
        event = first
        try:
            while isinstance(event, Delta):
                clock.saw_text()
                texts.append(event.text)
                event = await anext(events)
        finally:
            await events.aclose()
        body = {"model": data.model, "created_at": _now(), **shape("".join(texts)), "done": True}
        return Response({**body, **clock.statistics(event)})
    lines = _ndjson(first, events, data.model, shape, clock)
    return Stream(lines, media_type="application/x-ndjson")


async def _ndjson(
    first: Delta | Done,
    events: AsyncGenerator[Delta | Done, None],
    model: str,
    shape: Shape,
    clock: _Clock,
) -> AsyncIterator[bytes]:
    def line(body: dict[str, Any]) -> bytes:
        return (json.dumps(body, ensure_ascii=False) + "\n").encode()

    try:
        event = first
        while isinstance(event, Delta):
            clock.saw_text()
            yield line({"model": model, "created_at": _now(), **shape(event.text), "done": False})
            event = await anext(events)
        last = {"model": model, "created_at": _now(), **shape(""), "done": True}
        yield line({**last, **clock.statistics(event)})
    except Exception as exc:  # the status line is sent: Ollama reports a late error as a last JSON line
        log.exception("error while streaming an Ollama-API answer", exc_info=exc)
        yield line({"error": f"generation failed: {exc}"})
    finally:
        await events.aclose()  # a client that went away stops its generation


def _loaded(model: str, shape: Shape) -> Response[dict[str, Any]]:
    """Ollama's answer to a request with nothing to generate: it (pre)loads the model."""
    body = {"model": model, "created_at": _now(), **shape(""), "done": True, "done_reason": "load"}
    return Response(body)


@post("/chat", status_code=200, summary="Chat (Ollama-compatible)")
async def ollama_chat(
    data: JSONBody[OllamaChatRequest], state: State, request: Request[ApiKey, str, State]
) -> Response[dict[str, Any]] | Stream:
    data.refuse_unsupported()
    if data.tools:
        raise ApiError(400, "tools are not supported by this server", param="tools")
    if any(m.images for m in data.messages):
        raise ApiError(400, "images are not supported: the served models read text", param="messages")
    if not data.messages:
        await _registry(state).get(data.model)
        return _loaded(data.model, _chat_shape)
    messages = [{"role": m.role, "content": m.content} for m in data.messages]
    return await _answer(_as_chat_request(data, messages), state, request.user, _chat_shape)


@post("/generate", status_code=200, summary="Completion of one prompt (Ollama-compatible)")
async def ollama_generate(
    data: JSONBody[OllamaGenerateRequest], state: State, request: Request[ApiKey, str, State]
) -> Response[dict[str, Any]] | Stream:
    data.refuse_unsupported()
    for unsupported in ("images", "suffix", "template"):
        if getattr(data, unsupported):
            raise ApiError(400, f"{unsupported} is not supported by this server", param=unsupported)
    if data.raw:
        raise ApiError(400, "raw prompts are not supported: the model's chat template always applies")
    if not data.prompt:
        await _registry(state).get(data.model)
        return _loaded(data.model, _generate_shape)
    messages = [{"role": "user", "content": data.prompt}]
    if data.system:
        messages.insert(0, {"role": "system", "content": data.system})
    return await _answer(_as_chat_request(data, messages), state, request.user, _generate_shape)


def _registry(state: State) -> ModelRegistry:
    registry: ModelRegistry = state.registry
    return registry


@get("/tags", summary="Models served here (Ollama-compatible)")
async def ollama_tags(state: State) -> dict[str, Any]:
    registry = _registry(state)
    models = []
    for info in await registry.models():
        modified = info.created or datetime.fromtimestamp(state.started_at, UTC)
        backend = registry.configured.get(info.name)
        described = backend.describe() if backend is not None else None
        models.append(
            {
                "name": info.name,
                "model": info.name,
                "modified_at": modified.isoformat().replace("+00:00", "Z"),
                "size": described.parameters * _BYTES.get(described.dtype, 4) if described else 0,
                "digest": hashlib.sha256(info.name.encode()).hexdigest(),
                "details": _details(described),
            }
        )
    return {"models": models}


_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _details(described: ModelDescription | None) -> dict[str, Any]:
    if described is None:
        return {"format": "safetensors"}
    return {
        "format": "safetensors",
        "family": described.architecture,
        "families": [described.architecture],
        "parameter_size": _parameter_size(described.parameters),
        "quantization_level": described.dtype.upper(),
    }


def _parameter_size(count: int) -> str:
    return f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


async def _modelfile(state: State, directory: str) -> Modelfile | None:
    """The Modelfile of a model directory, built once per directory (it reads the tokenizer)."""
    built: dict[str, Modelfile | None] = state.setdefault("modelfiles", {})
    if directory not in built:
        try:
            built[directory] = await asyncio.to_thread(modelfile_for, state.settings, directory, directory)
        except ExportError as exc:
            log.info("no Modelfile for %s: %s", directory, exc)
            built[directory] = None
    return built[directory]


@post("/show", status_code=200, summary="A model's details and Modelfile (Ollama-compatible)")
async def ollama_show(data: JSONBody[ModelRequest], state: State) -> dict[str, Any]:
    backend = await _registry(state).get(data.model)
    if not backend.ready:
        raise BackendNotReady(backend.not_ready_reason)
    shown: dict[str, Any] = {"capabilities": ["completion"], "modified_at": _now()}
    described = backend.describe()
    if described is None:  # e.g. a model on an Ollama server: its own /api/show has the details
        shown["model_info"] = {"general.context_length": backend.context_window}
        return shown
    architecture = described.architecture
    shown["details"] = _details(described)
    shown["model_info"] = {
        "general.architecture": architecture,
        "general.parameter_count": described.parameters,
        f"{architecture}.context_length": backend.context_window,
    }
    if described.directory and (modelfile := await _modelfile(state, described.directory)):
        shown |= {
            "modelfile": modelfile.text(),
            "template": modelfile.template,
            "parameters": modelfile.parameters,
        }
    return shown


@get("/version", summary="The Ollama API version these routes follow")
async def ollama_version() -> dict[str, str]:
    return {"version": OLLAMA_API_VERSION}


ollama_router = Router(
    path="/api",
    route_handlers=[ollama_chat, ollama_generate, ollama_tags, ollama_show, ollama_version],
    exception_handlers=OLLAMA_EXCEPTION_HANDLERS,
    tags=["Ollama-compatible"],
)
