"""Request bodies of the Ollama-compatible API (``/api/*``).

Unknown fields are ignored, as Ollama does (clients send ``keep_alive``, ``think``, ...); the options
we honour are typed and range-checked.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assistant.errors import ApiError
from assistant.settings import Style


class OllamaOptions(BaseModel):
    """The runner options we honour; Ollama's others (``top_k``, ``repeat_penalty``, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    #: Tokens to generate; -1 (unlimited) and -2 (fill the context) take the server's default.
    num_predict: int | None = Field(None, ge=-2)
    stop: list[str] | None = None
    #: Accepted; the served model's context window (``model.context_window``) applies.
    num_ctx: int | None = Field(None, ge=1)
    style: Style | None = None
    terms: dict[str, str] | None = None


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None


class OllamaRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # as Ollama: keep_alive, think, ... are not errors

    model: str
    stream: bool = True
    options: OllamaOptions | None = None
    format: str | dict[str, Any] | None = None
    style: Style | None = None
    terms: dict[str, str] | None = None

    def refuse_unsupported(self) -> None:
        if self.format:
            raise ApiError(400, "format (JSON or structured output) is not supported by this server")


class OllamaChatRequest(OllamaRequest):
    messages: list[OllamaMessage] = []
    tools: list[Any] | None = None


class OllamaGenerateRequest(OllamaRequest):
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None
    suffix: str | None = None
    template: str | None = None
    raw: bool = False


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
