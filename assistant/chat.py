"""The chat pipeline, the same for streaming and non-streaming answers and for every backend.

    safety screen of the input (blocked: the backend is never called; PII -> placeholders)
    prompt: system instruction (base + style + glossary) + the conversation, trimmed to the window
    -> backend.stream -> stop sequences -> glossary rewrite -> safety output filter -> PII restored
    -> Delta ... Done

Raises ``ChatError`` subclasses: ``ContextTooLong``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from assistant.backends.base import Backend, FinishReason, GenerationOptions, Message, TextPiece
from assistant.settings import Style
from safety.glossary import Glossary
from safety.guard import Guard, SafetyEvent
from safety.pii import PiiVault
from safety.policy import Policy

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


ChatFinish = FinishReason | Literal["content_filter"]


@dataclass(frozen=True)
class Done:
    finish_reason: ChatFinish
    usage: Usage
    terms_rewrites: int
    #: What the output filter blocked, masked or flagged (input events are on ``Safety``).
    safety_events: list[SafetyEvent] = field(default_factory=list)


@dataclass
class Safety:
    """The safety layer for one request: its policy, its PII vault and what it has found so far."""

    guard: Guard
    policy: Policy
    vault: PiiVault = field(default_factory=PiiVault)
    events: list[SafetyEvent] = field(default_factory=list)

    def screen(self, conversation: list[Message]) -> bool:
        """Check and mask the conversation in place; returns whether it must be refused.

        Every user message is checked (a client can rewrite history); the semantic detectors run on
        the newest one. PII in any message becomes a placeholder.
        """
        last_user = max((i for i, m in enumerate(conversation) if m["role"] == "user"), default=-1)
        blocked = False
        for i, message in enumerate(conversation):
            if message["role"] == "system":
                continue
            verdict = self.guard.check_input(
                message["content"], self.policy, self.vault, semantic=i == last_user
            )
            if message["role"] == "user":
                blocked = blocked or verdict.blocked
                self.events += verdict.events
            else:  # an earlier answer is not refused for what it says: note it, do not call it a block
                self.events += [_as_flag(e) for e in verdict.events]
            message["content"] = verdict.text
        return blocked


def _as_flag(event: SafetyEvent) -> SafetyEvent:
    return event if event.action != "block" else replace(event, action="flag")


@dataclass(frozen=True)
class ChatJob:
    """A validated request, ready to run."""

    messages: list[Message]
    options: GenerationOptions
    stop: tuple[str, ...] = ()
    glossary: Glossary = field(default_factory=lambda: Glossary({}))
    safety: Safety | None = None


class _Stage(Protocol):
    def feed(self, text: str) -> str: ...
    def flush(self) -> str: ...


def _feed(stages: list[_Stage], text: str) -> str:
    for stage in stages:
        text = stage.feed(text) if text else ""
    return text


def _flush(stages: list[_Stage]) -> str:
    text = ""
    for stage in stages:
        text = (stage.feed(text) if text else "") + stage.flush()
    return text


async def refusal(message: str, prompt_tokens: int) -> AsyncGenerator[Delta | Done, None]:
    """The answer to a blocked request: a canned message; the backend is never called."""
    yield Delta(message)
    yield Done("content_filter", Usage(prompt_tokens, 0), 0)


async def run_chat(backend: Backend, job: ChatJob, prompt_tokens: int) -> AsyncGenerator[Delta | Done, None]:
    """Generate and pass the text through the stages; closing this iterator stops the backend."""
    stops = StopScanner(job.stop)
    terms = job.glossary.stream()
    stages: list[_Stage] = [stops, terms]
    safety, output = job.safety, None
    if safety is not None:
        output = safety.guard.output_filter(safety.policy, job.messages[0]["content"])
        stages += [output, safety.vault.restorer()]
    events = backend.stream(job.messages, job.options)
    finish: ChatFinish = "stop"
    completion_tokens = 0
    try:
        async for event in events:
            if isinstance(event, TextPiece):
                completion_tokens = event.completion_tokens
                if text := _feed(stages, event.text):
                    yield Delta(text)
                if stops.stopped or (output is not None and output.blocked):
                    break
            else:
                finish, prompt_tokens = event.reason, event.prompt_tokens
                completion_tokens = event.completion_tokens
    finally:
        await events.aclose()
    tail = _flush(stages)
    if safety is not None and output is not None and output.blocked:
        finish = "content_filter"
        tail += safety.policy.responses.blocked_output_message
    if tail:
        yield Delta(tail)
    yield Done(
        finish, Usage(prompt_tokens, completion_tokens), terms.rewrites, output.events if output else []
    )
