"""``POST /v1/chat/completions``: HTTP in, a ``ChatJob`` through the pipeline, JSON or SSE out."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from litestar import Request, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.response import Stream

from assistant.audit import record_events
from assistant.backends.base import Backend, BackendError, BackendNotReady, GenerationOptions, Message
from assistant.chat import (
    ChatJob,
    Delta,
    Done,
    Safety,
    refusal,
    run_chat,
    system_instruction,
    trim_to_window,
    with_system,
)
from assistant.db import ApiKey
from assistant.errors import ApiError
from assistant.metrics import ServiceMetrics, metrics_of
from assistant.registry import ModelRegistry
from assistant.schemas import ChatCompletion, ChatCompletionRequest, Choice, ResponseMessage, UsageOut
from assistant.settings import Settings
from safety.glossary import Glossary
from safety.guard import Guard, SafetyEvent


def _glossary(terms: dict[str, str], settings: Settings) -> Glossary:
    limit, longest = settings.chat.max_terms, settings.chat.max_term_length
    if len(terms) > limit:
        raise ApiError(400, f"terms has {len(terms)} entries; the limit is {limit}", param="terms")
    for avoided, required in terms.items():
        if not any(c.isalnum() for c in avoided):
            raise ApiError(400, f"terms: wording {avoided!r} has no letters or digits", param="terms")
        if " ".join(avoided.split()) != avoided:
            raise ApiError(
                400, f"terms: wording {avoided!r} has leading, trailing or double spaces", param="terms"
            )
        if max(len(avoided), len(required)) > longest:
            raise ApiError(400, f"terms: wordings are limited to {longest} characters", param="terms")
    return Glossary(terms)


def _max_tokens(request: ChatCompletionRequest, settings: Settings) -> int:
    asked = request.max_tokens or request.max_completion_tokens or settings.model.max_tokens_default
    limit = settings.model.max_tokens_limit
    if asked > limit:
        raise ApiError(400, f"max_tokens is {asked}; this server allows at most {limit}", param="max_tokens")
    return asked


def prepare(
    request: ChatCompletionRequest, backend: Backend, settings: Settings, safety: Safety | None
) -> tuple[ChatJob, int, bool]:
    """Validate what the schema cannot, screen the input, build the prompt.

    Returns the job, its prompt tokens, and whether the safety layer refused the input.
    """
    if request.n != 1:
        raise ApiError(400, f"n={request.n} is not supported: only one choice (n=1) per request", param="n")
    terms = request.terms or {}
    glossary = _glossary(terms, settings)
    max_tokens = _max_tokens(request, settings)
    style = request.style or settings.chat.default_style
    conversation: list[Message] = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in request.messages
    ]
    if conversation[-1]["role"] == "assistant":
        raise ApiError(400, "the last message must come from the user (or system)", param="messages")
    blocked = safety.screen(conversation) if safety is not None else False
    instruction = system_instruction(settings.chat.system_prompt, style, terms)
    messages, prompt_tokens = trim_to_window(backend, with_system(conversation, instruction), max_tokens)
    temperature = settings.chat.default_temperature if request.temperature is None else request.temperature
    options = GenerationOptions(
        max_tokens, temperature, request.top_p or 1.0, request.seed, request.stop_sequences
    )
    job = ChatJob(messages, options, request.stop_sequences, glossary, safety)
    return job, prompt_tokens, blocked


def request_safety(state: State, key: ApiKey) -> Safety | None:
    guard: Guard | None = state.guard
    if guard is None:
        return None
    return Safety(guard, state.policies[key.policy or "default"])


async def record(state: State, key: ApiKey, events: list[SafetyEvent]) -> None:
    blocks = metrics_of(state).safety_blocks
    for event in events:
        if event.action == "block":
            blocks.labels(event.direction, event.finding.category).inc()
    if events:
        async with state.sessions() as session:
            await session.run_sync(record_events, key.name, events)


async def start_chat(
    data: ChatCompletionRequest, state: State, key: ApiKey
) -> tuple[Delta | Done, AsyncGenerator[Delta | Done, None]]:
    """Run a chat request through the pipeline: its first event, and the generator of the rest.

    Errors such as an unknown model, a blocked input (when the policy answers with an error) or a full
    queue are raised here, before any byte of the answer is sent. Shared by the OpenAI and Ollama APIs.
    """
    arrived = time.monotonic()
    settings: Settings = state.settings
    registry: ModelRegistry = state.registry
    backend = await registry.get(data.model)
    if not backend.ready:
        await backend.check()  # an Ollama server may have come back
    if not backend.ready:
        raise BackendNotReady(backend.not_ready_reason)
    if state.guard is not None and not state.guard.ready:
        raise BackendNotReady("the safety layer is loading")
    safety = request_safety(state, key)
    # Off the event loop: the input checks (the semantic model's ~20 ms among them) and the prompt's
    # tokenization would otherwise hold up every other chat's stream meanwhile.
    job, prompt_tokens, blocked = await asyncio.to_thread(prepare, data, backend, settings, safety)
    await record(state, key, safety.events if safety else [])
    if blocked and safety is not None:
        responses = safety.policy.responses
        if responses.on_blocked_input == "error":
            raise ApiError(400, "the request was blocked by the content filter", code="content_filter")
        events = refusal(responses.refusal_message, prompt_tokens)
    else:
        events = run_chat(backend, job, prompt_tokens)
    events = _measured(_audited(events, partial(record, state, key)), metrics_of(state), data.model, arrived)
    return await anext(events), events


async def _measured(
    events: AsyncGenerator[Delta | Done, None], metrics: ServiceMetrics, model: str, arrived: float
) -> AsyncGenerator[Delta | Done, None]:
    """Pass the events on; report the request's latencies and tokens to the metrics at the end."""
    first_token: float | None = None
    try:
        async for event in events:
            if isinstance(event, Delta):
                first_token = first_token or time.monotonic()
            else:
                usage = event.usage
                metrics.answered(
                    model,
                    arrived,
                    first_token,
                    time.monotonic(),
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    event.finish_reason,
                )
            yield event
    finally:
        await events.aclose()


@post("/v1/chat/completions", status_code=200, summary="Chat completion (OpenAI-compatible)")
async def chat_completions(
    data: JSONBody[ChatCompletionRequest], state: State, request: Request[ApiKey, str, State]
) -> ChatCompletion | Stream:
    first, events = await start_chat(data, state, request.user)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not data.stream:
        return await _collect(first, events, completion_id, created, data.model)
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    chunks = _sse(first, events, completion_id, created, data.model, include_usage)
    return Stream(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _audited(
    events: AsyncGenerator[Delta | Done, None], record: Callable[[list[SafetyEvent]], Awaitable[None]]
) -> AsyncGenerator[Delta | Done, None]:
    """Pass the events on; write the output filter's findings to the audit table at the end."""
    try:
        async for event in events:
            if isinstance(event, Done):
                await record(event.safety_events)
            yield event
    finally:
        await events.aclose()


async def _collect(
    first: Delta | Done,
    events: AsyncGenerator[Delta | Done, None],
    completion_id: str,
    created: int,
    model: str,
) -> ChatCompletion:
    texts: list[str] = []
    event = first
    try:
        while isinstance(event, Delta):
            texts.append(event.text)
            event = await anext(events)
    finally:
        await events.aclose()
    usage = UsageOut(
        prompt_tokens=event.usage.prompt_tokens,
        completion_tokens=event.usage.completion_tokens,
        total_tokens=event.usage.total_tokens,
    )
    choice = Choice(message=ResponseMessage(content="".join(texts)), finish_reason=event.finish_reason)
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[choice],
        usage=usage,
        terms_rewrites=event.terms_rewrites,
    )


async def _sse(
    first: Delta | Done,
    events: AsyncGenerator[Delta | Done, None],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    def choice(delta: dict[str, str], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    try:
        yield chunk(choice({"role": "assistant", "content": ""}))
        event = first
        while isinstance(event, Delta):
            yield chunk(choice({"content": event.text}))
            event = await anext(events)
        yield chunk(choice({}, event.finish_reason), terms_rewrites=event.terms_rewrites)
        if include_usage:
            usage = {
                "prompt_tokens": event.usage.prompt_tokens,
                "completion_tokens": event.usage.completion_tokens,
                "total_tokens": event.usage.total_tokens,
            }
            yield chunk([], usage=usage)
        yield b"data: [DONE]\n\n"
    except BackendError as exc:  # the status line is sent: report it in the stream, as OpenAI does
        error = {"message": f"generation failed: {exc}", "type": "api_error", "code": "backend_error"}
        yield f"data: {json.dumps({'error': error})}\n\n".encode()
    finally:
        await events.aclose()  # a client that went away stops its generation
