"""The backend contract: one small abstract class every model server implements.

A backend turns chat messages into a stream of ``TextPiece`` events closed by one ``Finished``.
Stop sequences, glossary and safety are applied above it, the same for every backend.
Closing the iterator early (``aclose``) must stop the generation.

Raises ``BackendError`` subclasses: ``BackendNotReady``, ``BackendOverloaded``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal, TypedDict

FinishReason = Literal["stop", "length"]


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class BackendError(Exception):
    """Base class of backend errors."""


class BackendNotReady(BackendError):
    """The model is still loading or failed to load."""


class BackendOverloaded(BackendError):
    """Too many requests are waiting for this backend."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int
    temperature: float = 0.3
    top_p: float = 1.0
    seed: int | None = None
    #: The pipeline cuts the text at these too; a backend that can stop on them saves the work.
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextPiece:
    text: str
    #: Tokens generated so far, this piece included.
    completion_tokens: int


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


Event = TextPiece | Finished


@dataclass(frozen=True)
class ModelDescription:
    """What a backend knows about its model (Ollama's ``/api/show`` reports it)."""

    architecture: str
    parameters: int
    dtype: str
    #: Linear layers decoded from their 4-bit or 8-bit weights (``four_bit``, ``eight_bit``).
    low_bit_layers: int = 0
    #: A local Hugging Face model directory, when the model is one (a Modelfile can be built from it).
    directory: str | None = None


@dataclass(frozen=True)
class BatchStats:
    """Requests waiting for a place in a backend's batch, and running in it; draft tokens of answer
    openings prefilled so far, and those the model's own choices confirmed."""

    waiting: int
    running: int
    drafted: int = 0
    drafts_accepted: int = 0


class Backend(ABC):
    """A model behind the chat API."""

    #: Whether ``count_tokens`` is exact (the model's own tokenizer) rather than an estimate.
    exact_token_counts: bool = True

    @property
    @abstractmethod
    def ready(self) -> bool: ...

    @property
    def not_ready_reason(self) -> str:
        return "the model is loading"

    @property
    @abstractmethod
    def context_window(self) -> int:
        """Tokens of prompt plus answer the model can take."""

    async def start(self) -> None:
        """Load the model; called once in the app's lifespan, in the background."""

    async def check(self) -> None:
        """Refresh ``ready`` where it depends on something outside (``/readyz`` calls it)."""

    def describe(self) -> ModelDescription | None:
        """The loaded model's description, where the backend knows it."""
        return None

    def batch_stats(self) -> BatchStats | None:
        """Requests waiting and running, where the backend schedules them itself (None elsewhere)."""
        return None

    async def close(self) -> None:
        """Release the model."""

    @abstractmethod
    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens for ``messages`` rendered with the model's chat template."""

    @abstractmethod
    def stream(self, messages: list[Message], options: GenerationOptions) -> AsyncGenerator[Event, None]:
        """Generate an answer to ``messages``: text pieces, then one ``Finished``."""
