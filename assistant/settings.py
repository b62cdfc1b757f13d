"""Settings, read from the environment (prefix ``ASSISTANT_``, nested groups joined by ``__``).

``ASSISTANT_MODEL__MAX_TOKENS_DEFAULT=128`` sets ``Settings().model.max_tokens_default``.
The README's configuration table is generated from these classes (``assistant config-table``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from safety.policy import DEFAULT_POLICY_FILE, Policy, load_policies

Style = Literal["formal", "casual", "friendly"]
ModelDtype = Literal["auto", "float32", "bfloat16", "float16"]


class ModelSettings(BaseModel):
    enabled: bool = Field(
        True, description="Serve this Hugging Face model in-process; false: only `ollama_models`."
    )
    name: str = Field("smollm2-135m-instruct", description="Name clients pass as `model`.")
    path: str | None = Field(
        None,
        description="Local Hugging Face model directory (or hub id). Unset: bundled SmolLM2-135M-Instruct.",
    )
    context_window: int | None = Field(
        None, ge=64, description="Tokens of prompt + answer. Unset: the model's own maximum."
    )
    max_tokens_default: int = Field(256, ge=1, description="`max_tokens` when a request gives none.")
    max_tokens_limit: int = Field(1024, ge=1, description="Largest `max_tokens` a request may ask for.")
    dtype: ModelDtype = Field(
        "auto",
        description="Weights' precision. `auto`: bfloat16 on a GPU or CPU with fast bfloat16, else float32.",
    )
    four_bit: bool = Field(
        True,
        description="On a CPU, decode linear layers whose weights are exactly 4-bit (the bundled model's, "
        "from its Q4_1 GGUF) with torch's 4-bit kernel: the same weights, a quarter of bfloat16's bytes "
        "(an eighth of float32's); and those exactly 8-bit (its Q8_0 output layer) with its 8-bit kernel, "
        "unless bfloat16 products are native and faster. "
        "`false`: float32 answers that do not depend on the batch.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for the model's decoding (torch's). Unset: torch's default (every core).",
    )
    max_batch: int = Field(
        16,
        ge=1,
        le=256,
        description="Requests generated together (continuous batching); 1: one at a time. More places "
        "let a burst of arrivals start at once, at a slower step each.",
    )
    queue_timeout: float = Field(
        120, gt=0, description="Seconds a request may wait for a place in the batch before a 429."
    )
    prefix_cache: int = Field(
        8, ge=0, description="System prompts whose KV cache is kept and reused by later requests (0: none)."
    )

    @model_validator(mode="after")
    def _default_within_limit(self) -> ModelSettings:
        if self.max_tokens_default > self.max_tokens_limit:
            raise ValueError("max_tokens_default must not exceed max_tokens_limit")
        return self


class OllamaModelSettings(BaseModel):
    """A model served from an Ollama server (``ollama_models`` is a list of these)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name clients pass as `model`.")
    model: str | None = Field(None, description="Model name on the Ollama server. Unset: `name`.")
    host: str = Field("http://127.0.0.1:11434", description="The Ollama server.")
    context_window: int = Field(
        4096, ge=64, description="Sent as `num_ctx` with every request (Ollama's default truncates)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers, e.g. `Authorization` for a proxy."
    )
    timeout: float = Field(600, gt=0, description="Seconds to wait for the server.")


class ChatSettings(BaseModel):
    default_style: Style = Field("friendly", description="Style when a request gives none.")
    default_temperature: float = Field(0.3, ge=0, le=2, description="Temperature when a request gives none.")
    max_terms: int = Field(100, ge=0, description="Most glossary entries one request may carry.")
    max_term_length: int = Field(100, ge=1, description="Longest glossary wording, in characters.")
    max_queued_requests: int = Field(
        64, ge=1, description="Requests waiting for a place in the batch before new ones get 429."
    )
    system_prompt: str = Field(
        "You are a customer-service assistant. Answer the customer's question helpfully and accurately.",
        description="Base system instruction; style and glossary instructions are added to it.",
    )


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address `assistant serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `assistant serve` listens on.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body; larger gets 413.")


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        None, description="SQLAlchemy URL (sync driver). Unset: SQLite file `assistant.db` in the data dir."
    )
    auto_migrate: bool = Field(True, description="`assistant serve` runs Alembic migrations on start.")


class SafetySettings(BaseModel):
    enabled: bool = Field(True, description="Run the safety layer on every chat request.")
    policy_file: Path | None = Field(None, description="Default policy (TOML). Unset: the bundled default.")
    policies_dir: Path | None = Field(
        None, description="Named policies (`NAME.toml`) that API keys can be assigned."
    )
    semantic: bool = Field(True, description="Load the embedding model of the semantic detectors.")
    semantic_encoder: Literal["e5-small", "smollm2-135m-instruct"] = Field(
        "e5-small",
        description="What the semantic detectors read: `e5-small` embeddings, or `smollm2-135m-instruct`, "
        "the default chat model's hidden states (more attacks caught, about five times the CPU time).",
    )

    def load_policies(self) -> dict[str, Policy]:
        """The default policy and the named ones; raises ``PolicyError`` naming a bad field."""
        return load_policies(self.policy_file or DEFAULT_POLICY_FILE, self.policies_dir)


class FinetuneSettings(BaseModel):
    broker_url: str | None = Field(
        None,
        description="Celery broker, e.g. `redis://localhost:6379/0`. Unset: SQLite file `celery-broker.db` "
        "in the data dir.",
    )
    result_backend: str | None = Field(
        None, description="Celery result backend. Unset: SQLite file `celery-results.db` in the data dir."
    )
    embedded_worker: bool = Field(
        True, description="`assistant serve` also starts a fine-tuning worker (`assistant worker`) beside it."
    )
    max_file_bytes: int = Field(50_000_000, ge=1024, description="Largest file `POST /v1/files` accepts.")
    min_examples: int = Field(10, ge=1, description="Fewest examples a fine-tuning file may have.")
    visibility_timeout: int = Field(
        24 * 3600, ge=60, description="Seconds before Redis redelivers an unacknowledged job (> longest job)."
    )
    max_attempts: int = Field(3, ge=1, description="Runs of a job (first + resumes after a lost worker).")
    stale_after: int = Field(
        600, ge=30, description="Seconds without a report after which a running job's worker counts as lost."
    )
    max_loaded_models: int = Field(
        2, ge=1, description="Fine-tuned models kept loaded for chat at once (least recently used unload)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path(".assistant"), description="Database, admin key file and job files.")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "assistant",
        description="Converted model copies (the bundled GGUF becomes safetensors here once).",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    model: ModelSettings = ModelSettings()
    ollama_models: list[OllamaModelSettings] = Field(
        default_factory=list,
        description='Models on Ollama servers, as JSON: `[{"name": "llama", "model": "llama3.2:1b", '
        '"host": "http://gpu-box:11434"}]`. Each is served beside `model`.',
    )
    chat: ChatSettings = ChatSettings()
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    safety: SafetySettings = SafetySettings()
    finetune: FinetuneSettings = FinetuneSettings()

    @model_validator(mode="after")
    def _distinct_model_names(self) -> Settings:
        names = [self.model.name] if self.model.enabled else []
        names += [m.name for m in self.ollama_models]
        if not names:
            raise ValueError("no model to serve: enable `model` or configure `ollama_models`")
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"model names must be distinct; served twice: {', '.join(twice)}")
        return self

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'assistant.db'}"

    @property
    def broker_url(self) -> str:
        return self.finetune.broker_url or f"sqla+sqlite:///{self.data_dir / 'celery-broker.db'}"

    @property
    def result_backend(self) -> str:
        return self.finetune.result_backend or f"db+sqlite:///{self.data_dir / 'celery-results.db'}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir.resolve() / "files"

    @property
    def jobs_dir(self) -> Path:
        """One folder per job: checkpoints, adapter, merged model (absolute: the worker may run elsewhere)."""
        return self.data_dir.resolve() / "jobs"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin-key.txt"
