"""The chat pipeline, the same for streaming and non-streaming answers and for every backend.

    prompt: system instruction (base + style + glossary) + the conversation, trimmed to the window
    -> backend.stream -> stop sequences -> glossary rewrite -> Delta ... Done

Raises ``ChatError`` subclasses: ``ContextTooLong``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from assistant.backends.base import Backend, FinishReason, GenerationOptions, Message, TextPiece
from assistant.settings import Style
from safety.glossary import Glossary

STYLE_INSTRUCTIONS: dict[Style, str] = {
    "formal": "Write in a formal, courteous and precise register. Avoid slang and contractions.",
    "casual": "Write in a relaxed, plain, conversational way, as you would talk to a colleague.",
    "friendly": "Write in a warm, friendly and encouraging tone, and keep it professional.",
}


class ChatError(Exception):
    """Base class of chat pipeline errors; ``param`` names the request field at fault."""

    param: str | None = None
    code: str | None = None


class ContextTooLong(ChatError):
    param = "messages"
    code = "context_length_exceeded"


def system_instruction(base: str, style: Style, terms: dict[str, str]) -> str:
    parts = [base, STYLE_INSTRUCTIONS[style]]
    if terms:
        rules = "; ".join(f'say "{required}" instead of "{avoided}"' for avoided, required in terms.items())
        parts.append(f"Use the company's wording: {rules}.")
    return "\n".join(parts)


def with_system(messages: list[Message], instruction: str) -> list[Message]:
    """One system message first: ours, followed by the caller's own system messages."""
    theirs = [m["content"] for m in messages if m["role"] == "system"]
    system: Message = {"role": "system", "content": "\n\n".join([instruction, *theirs])}
    return [system, *(m for m in messages if m["role"] != "system")]


def trim_to_window(backend: Backend, messages: list[Message], max_tokens: int) -> tuple[list[Message], int]:
    """Drop the oldest turns until prompt + ``max_tokens`` fits; returns the messages and prompt tokens.

    ``messages`` starts with the system message, which is always kept, as is the last message.
    """
    budget = backend.context_window - max_tokens
    system, turns = messages[0], messages[1:]
    while True:
        kept = [system, *turns]
        tokens = backend.count_tokens(kept)
        if tokens <= budget:
            return kept, tokens
        if len(turns) <= 1:
            raise ContextTooLong(
                f"the last message with the system instruction takes {tokens} tokens, but the context "
                f"window is {backend.context_window} tokens with {max_tokens} kept for the answer; "
                "shorten the message or lower max_tokens"
            )
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] == "assistant":  # a conversation resumes on a user turn
            turns = turns[1:]


@dataclass
class StopScanner:
    """Cuts text at the first stop sequence, holding back a possible partial match."""

    stops: tuple[str, ...]
    stopped: bool = False
    _buffer: str = ""

    def feed(self, text: str) -> str:
        self._buffer += text
        hits = [i for i in (self._buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._buffer = self._buffer[: min(hits)], ""
            return out
        keep = max((len(s) - 1 for s in self.stops), default=0)
        cut = len(self._buffer) - keep
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return out


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Done:
    finish_reason: FinishReason
    usage: Usage
    terms_rewrites: int


@dataclass(frozen=True)
class ChatJob:
    """A validated request, ready to run."""

    messages: list[Message]
    options: GenerationOptions
    stop: tuple[str, ...] = ()
    glossary: Glossary = field(default_factory=lambda: Glossary({}))


async def run_chat(backend: Backend, job: ChatJob, prompt_tokens: int) -> AsyncGenerator[Delta | Done, None]:
    """Generate, cut at stop sequences, rewrite the glossary; closing this iterator stops the backend."""
    stops = StopScanner(job.stop)
    terms = job.glossary.stream()
    events = backend.stream(job.messages, job.options)
    finish: FinishReason = "stop"
    completion_tokens = 0
    try:
        async for event in events:
            if isinstance(event, TextPiece):
                completion_tokens = event.completion_tokens
                if text := terms.feed(stops.feed(event.text)):
                    yield Delta(text)
                if stops.stopped:
                    break
            else:
                finish, prompt_tokens = event.reason, event.prompt_tokens
                completion_tokens = event.completion_tokens
    finally:
        await events.aclose()
    if text := terms.feed(stops.flush()) + terms.flush():
        yield Delta(text)
    yield Done(finish, Usage(prompt_tokens, completion_tokens), terms.rewrites)
