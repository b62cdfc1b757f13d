"""A model on an Ollama server, through the official ``ollama`` client (async).

A peer of the HF backend behind the same contract: the pipeline above it (stop sequences, glossary,
safety, streaming) is the same. What this module adds is the translation to Ollama:

* every request carries ``num_ctx`` (Ollama silently truncates prompts to its own default otherwise)
  and our generation options as Ollama options (``temperature``, ``top_p``, ``seed``, ``num_predict``,
  ``stop``);
* Ollama's errors become backend errors: a busy server (503, or 429 from a proxy) is
  ``BackendOverloaded``, an unreachable one ``BackendNotReady``, an ``{"error": ...}`` line in the
  middle of a stream ``OllamaError``;
* closing the stream (our client went away) closes the upstream HTTP response, which stops Ollama.

Readiness asks the server (``show``) whether the model is there; ``/readyz`` reports why not.
Ollama has no tokenize endpoint, so prompt tokens are estimated (``exact_token_counts = False``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx
import ollama

from assistant.backends.base import (
    Backend,
    BackendError,
    BackendNotReady,
    BackendOverloaded,
    Event,
    Finished,
    FinishReason,
    GenerationOptions,
    Message,
    TextPiece,
)
from assistant.settings import OllamaModelSettings

log = logging.getLogger(__name__)

#: Characters per token for the estimate, a little low so the estimate errs on the long side.
CHARS_PER_TOKEN = 3.5
#: Tokens a chat template adds around each message (role markers, end of turn).
TOKENS_PER_MESSAGE = 5


class OllamaError(BackendError):
    """The Ollama server answered with an error."""


class OllamaBackend(Backend):
    exact_token_counts = False

    def __init__(self, settings: OllamaModelSettings) -> None:
        self.settings = settings
        self.upstream_model = settings.model or settings.name
        self._client = ollama.AsyncClient(
            host=settings.host, headers=settings.headers, timeout=settings.timeout
        )
        self._problem: str | None = "not checked yet"

    @property
    def ready(self) -> bool:
        return self._problem is None

    @property
    def not_ready_reason(self) -> str:
        return self._problem or ""

    @property
    def context_window(self) -> int:
        return self.settings.context_window

    async def start(self) -> None:
        await self.check()

    async def check(self) -> None:
        """Ask the server whether it answers and has the model; ``not_ready_reason`` says what is wrong."""
        where = f"the Ollama server at {self.settings.host}"
        try:
            await self._client.show(self.upstream_model)
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                self._problem = (
                    f"model {self.upstream_model!r} is not on {where} (`ollama pull {self.upstream_model}`)"
                )
            else:
                self._problem = f"{where} answered {exc.status_code}: {exc.error}"
        except (httpx.HTTPError, ConnectionError) as exc:
            self._problem = f"{where} is unreachable ({type(exc).__name__}: {exc})"
        else:
            self._problem = None
        if self._problem:
            log.warning("%s: %s", self.settings.name, self._problem)

    def count_tokens(self, messages: list[Message]) -> int:
        characters = sum(len(m["content"]) for m in messages)
        return int(characters / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)

    def options(self, options: GenerationOptions) -> dict[str, Any]:
        mapped: dict[str, Any] = {
            "num_ctx": self.settings.context_window,
            "num_predict": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
        }
        if options.seed is not None:
            mapped["seed"] = options.seed
        if options.stop:
            mapped["stop"] = list(options.stop)
        return mapped

    async def stream(
        self, messages: list[Message], options: GenerationOptions
    ) -> AsyncGenerator[Event, None]:
        try:
            parts = await self._client.chat(
                model=self.upstream_model,
                messages=[dict(m) for m in messages],
                options=self.options(options),
                stream=True,
            )
        except ollama.ResponseError as exc:
            raise self.translate_error(exc) from exc
        except (httpx.HTTPError, ConnectionError) as exc:
            raise BackendNotReady(f"the Ollama server at {self.settings.host} is unreachable: {exc}") from exc
        pieces = 0
        try:
            async for part in parts:
                if text := part.message.content:
                    pieces += 1
                    yield TextPiece(text, completion_tokens=pieces)
                if part.done:
                    reason: FinishReason = "length" if part.done_reason == "length" else "stop"
                    prompt = part.prompt_eval_count or self.count_tokens(messages)
                    yield Finished(reason, prompt, part.eval_count or pieces)
                    return
            raise OllamaError("the Ollama server ended the answer without its final line")
        except ollama.ResponseError as exc:
            raise self.translate_error(exc) from exc
        except httpx.HTTPError as exc:
            raise OllamaError(f"the connection to the Ollama server broke: {exc}") from exc
        finally:
            # The client's stream is an async generator holding the HTTP response: closing it closes
            # the connection, and Ollama stops generating when its client goes away.
            await cast(AsyncGenerator[ollama.ChatResponse, None], parts).aclose()

    def translate_error(self, exc: ollama.ResponseError) -> BackendError:
        if exc.status_code in (429, 503):
            return BackendOverloaded(f"the Ollama server is busy: {exc.error}", retry_after=2)
        if exc.status_code == 404:
            return BackendNotReady(f"model {self.upstream_model!r} is not on the Ollama server: {exc.error}")
        return OllamaError(f"the Ollama server answered: {exc.error}")
