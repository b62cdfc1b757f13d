"""A backend that answers with a script: for unit tests of the pipeline around the model."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from assistant.backends.base import Backend, Event, Finished, GenerationOptions, Message, TextPiece


class ScriptedBackend(Backend):
    """Streams ``pieces`` one by one and records every prompt it was given."""

    def __init__(self, pieces: list[str] | None = None) -> None:
        self.pieces = pieces or ["Hello", " there", "!"]
        self.prompts: list[list[Message]] = []

    @property
    def ready(self) -> bool:
        return True

    @property
    def context_window(self) -> int:
        return 4096

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"].split()) + 4 for m in messages)

    async def stream(
        self, messages: list[Message], options: GenerationOptions
    ) -> AsyncGenerator[Event, None]:
        self.prompts.append([dict(m) for m in messages])  # type: ignore[misc]
        for count, piece in enumerate(self.pieces, 1):
            yield TextPiece(piece, completion_tokens=count)
        yield Finished("stop", self.count_tokens(messages), len(self.pieces))


class SpyBackend(Backend):
    """Wraps a real backend and counts the generations it was asked for."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def ready(self) -> bool:
        return self.inner.ready

    @property
    def context_window(self) -> int:
        return self.inner.context_window

    def count_tokens(self, messages: list[Message]) -> int:
        return self.inner.count_tokens(messages)

    async def stream(
        self, messages: list[Message], options: GenerationOptions
    ) -> AsyncGenerator[Event, None]:
        self.calls += 1
        async for event in self.inner.stream(messages, options):
            yield event
