"""Distillation, phase 1: a teacher model answers every prompt; the answers become training data.

A teacher is any server speaking the OpenAI chat API (``OpenAITeacher``: OpenAI, vLLM, this service),
Ollama's (``OllamaTeacher``), or a Hugging Face model loaded in the worker (``LocalTeacher``), which is
also what the white-box modes (``finetune.white_box``) need. ``generate_answers`` asks it with bounded
concurrency, retries transient errors (connection, timeout, 429, 5xx) with exponential back-off, and
appends every result to a progress file as soon as it arrives, so a restarted run asks only what is
missing: no prompt is paid for twice (except those in flight when the worker died). Answers pass the
same output checks as the service's answers (``safety``): unsafe, empty, truncated and duplicate
answers are dropped and counted. A teacher that cannot be reached, or whose first answers are all
unusable, fails the run with ``TeacherError`` instead of hanging.

Raises ``TeacherError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import httpx
import ollama
import openai
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    model_validator,
)

from finetune.config import DistillationLoss, OnPolicySampling, WhiteBox
from safety.guard import Guard
from safety.policy import Policy

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
DropReason = Literal["unsafe", "empty", "truncated", "duplicate"]
Mode = Literal["black_box", "logits", "on_policy"]


class TeacherError(Exception):
    """The teacher cannot be used: unreachable, refusing, or answering nothing usable."""


class TeacherSpec(BaseModel):
    """Where the teacher is. ``api_key`` is a secret: never logged, never shown by the API."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai", "ollama", "local"]
    #: ``openai``: the API's base URL (``https://api.openai.com/v1``, ``http://host:8000/v1``);
    #: ``ollama``: the server (``http://host:11434``); ``local``: unused.
    base_url: str | None = None
    #: The model's name on the server; ``local``: a model this service serves, a directory or a hub id.
    model: str
    api_key: SecretStr | None = None
    timeout: float = Field(120, gt=0)
    #: ``local``: the directory (or hub id) the model loads from, resolved when the job is created.
    path: str | None = Field(None, exclude_if=lambda value: value is None)

    @model_validator(mode="after")
    def _where(self) -> TeacherSpec:
        if self.kind != "local" and not self.base_url:
            raise ValueError(f"a teacher of kind {self.kind!r} needs its base_url")
        return self

    @property
    def location(self) -> str:
        return self.base_url or "this worker"

    @field_serializer("api_key", when_used="json")
    def _secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        """Masked, unless the job's own stored config is being written (``reveal_secrets``)."""
        if value is None:
            return None
        return value.get_secret_value() if (info.context or {}).get("reveal_secrets") else str(value)


class TeacherSettings(BaseModel):
    """How the teacher answers."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_768)
    samples_per_prompt: int = Field(1, ge=1, le=16)
    concurrency: int = Field(4, ge=1, le=64)
    max_retries: int = Field(4, ge=0, le=20)
    #: The run fails when this many answers arrived and none was usable (a teacher answering garbage).
    garbage_after: int = Field(20, ge=1)


class DistillationConfig(BaseModel):
    """A distillation job's teacher and mode, stored on its row beside the training config.

    Every mode starts with phase 1 (the teacher answers the prompts). ``black_box`` then trains on those
    answers alone; ``logits`` and ``on_policy`` also learn the teacher's token probabilities, which only
    a local teacher gives (``white_box``).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "black_box"
    teacher: TeacherSpec
    loss: DistillationLoss = DistillationLoss()
    on_policy: OnPolicySampling = OnPolicySampling()
    generation: TeacherSettings = TeacherSettings()
    #: The safety policy the teacher's answers must pass (unset: the bundled default policy).
    policy_file: Path | None = None
    #: The prompts (chat JSONL ending with the user); set when the job is created.
    prompt_file: Path | None = None

    @model_validator(mode="after")
    def _probabilities_need_a_local_teacher(self) -> DistillationConfig:
        check_mode(self.mode, self.teacher)
        return self

    def white_box(self) -> WhiteBox | None:
        """What phase 2 needs to learn the teacher's probabilities too; None in black-box mode."""
        if self.mode == "black_box":
            return None
        teacher = self.teacher.path or self.teacher.model
        return WhiteBox(mode=self.mode, teacher_model=teacher, loss=self.loss, on_policy=self.on_policy)


def check_mode(mode: Mode, teacher: TeacherSpec) -> None:
    """Raise ``ValueError`` for a mode the teacher cannot serve."""
    if mode != "black_box" and teacher.kind != "local":
        raise ValueError(
            f"mode {mode!r} needs the teacher's token probabilities, which an {teacher.kind} teacher "
            "endpoint cannot give: only 'black_box' is offered for it (or use a 'local' teacher)"
        )


@dataclass(frozen=True)
class Answer:
    text: str
    truncated: bool


class Teacher(Protocol):
    async def answer(self, messages: Conversation, settings: TeacherSettings, seed: int) -> Answer: ...


class Transient(Exception):
    """Worth asking again after a pause."""


class OpenAITeacher:
    def __init__(self, spec: TeacherSpec) -> None:
        key = spec.api_key.get_secret_value() if spec.api_key else "none"
        self.model = spec.model
        self._client = openai.AsyncOpenAI(
            base_url=spec.base_url, api_key=key, max_retries=0, timeout=spec.timeout
        )

    async def close(self) -> None:
        await self._client.close()

    async def answer(self, messages: Conversation, settings: TeacherSettings, seed: int) -> Answer:
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
                seed=seed,
            )
        except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError) as exc:
            raise Transient(str(exc)) from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise Transient(f"{exc.status_code}: {exc.message}") from exc
            raise TeacherError(f"the teacher refused the request ({exc.status_code}): {exc.message}") from exc
        if not response.choices:
            return Answer("", truncated=False)
        choice = response.choices[0]
        return Answer(choice.message.content or "", truncated=choice.finish_reason == "length")


class OllamaTeacher:
    def __init__(self, spec: TeacherSpec) -> None:
        headers = {"Authorization": f"Bearer {spec.api_key.get_secret_value()}"} if spec.api_key else {}
        self.model = spec.model
        self._client = ollama.AsyncClient(host=spec.base_url, headers=headers, timeout=spec.timeout)

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]  # untyped in the ollama client

    async def answer(self, messages: Conversation, settings: TeacherSettings, seed: int) -> Answer:
        options = {"temperature": settings.temperature, "num_predict": settings.max_tokens, "seed": seed}
        try:
            response = await self._client.chat(model=self.model, messages=messages, options=options)
        except ollama.ResponseError as exc:
            if exc.status_code in (429, 503) or exc.status_code >= 500:
                raise Transient(f"{exc.status_code}: {exc.error}") from exc
            raise TeacherError(f"the teacher refused the request ({exc.status_code}): {exc.error}") from exc
        except (httpx.HTTPError, ConnectionError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from exc
        return Answer(response.message.content or "", truncated=response.done_reason == "length")


class LocalTeacher:
    """A Hugging Face model loaded in this process, answering one prompt at a time (torch runs one
    generation on all cores; concurrent prompts wait their turn)."""

    def __init__(self, spec: TeacherSpec) -> None:
        self.path = spec.path or spec.model
        self._lock = asyncio.Lock()
        self._loaded: tuple[Any, Any] | None = None

    async def close(self) -> None:
        self._loaded = None

    async def answer(self, messages: Conversation, settings: TeacherSettings, seed: int) -> Answer:
        async with self._lock:
            return await asyncio.to_thread(self._generate, messages, settings, seed)

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from finetune.training import base_model_config

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                config = base_model_config(self.path)
                model = AutoModelForCausalLM.from_pretrained(self.path, config=config, dtype=torch.float32)
                model.eval()  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise TeacherError(f"cannot load the local teacher {self.path}: {exc}") from exc
            self._loaded = tokenizer, model
        return self._loaded

    def _generate(self, messages: Conversation, settings: TeacherSettings, seed: int) -> Answer:
        import torch

        tokenizer, model = self._load()
        prompt = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": 1.0, "top_k": 0}
        with torch.no_grad():
            output = model.generate(
                **prompt,
                max_new_tokens=settings.max_tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                **(sampling if settings.temperature > 0 else {"do_sample": False}),
            )
        answer = output[0, prompt["input_ids"].shape[1] :].tolist()
        ended = bool(answer) and answer[-1] in end_of_turn_ids(model, tokenizer)
        text = tokenizer.decode(answer, skip_special_tokens=True)
        return Answer(text, truncated=not ended and len(answer) >= settings.max_tokens)


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the generation config's and the tokenizer's end of sequence."""
    eos = model.generation_config.eos_token_id
    return sorted({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None})


def make_teacher(spec: TeacherSpec) -> OpenAITeacher | OllamaTeacher | LocalTeacher:
    if spec.kind == "openai":
        return OpenAITeacher(spec)
    return OllamaTeacher(spec) if spec.kind == "ollama" else LocalTeacher(spec)


@dataclass
class Progress:
    """What phase 1 has done so far (also what a resumed run finds in its progress file)."""

    total: int
    answered: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        drops = ", ".join(f"{reason} {count}" for reason, count in sorted(self.dropped.items())) or "none"
        return f"{self.answered}/{self.total} answered, {self.kept} kept, dropped: {drops}"


@dataclass(frozen=True)
class Screen:
    """The output checks an answer must pass (the service's guard and policy)."""

    guard: Guard
    policy: Policy

    def check(self, text: str) -> str | None:
        """The answer as the service would send it (PII masked), or None when it would be blocked."""
        output = self.guard.output_filter(self.policy, "")
        released = output.feed(text) + output.flush()
        return None if output.blocked else released


def _judge(answer: Answer, screen: Screen | None, seen: set[str]) -> tuple[str | None, DropReason | None]:
    text = answer.text.strip()
    if not text:
        return None, "empty"
    if answer.truncated:
        return None, "truncated"
    if screen is not None:
        checked = screen.check(text)
        if checked is None:
            return None, "unsafe"
        text = checked
    if _normalized(text) in seen:
        return None, "duplicate"
    seen.add(_normalized(text))
    return text, None


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


async def _ask(teacher: Teacher, messages: Conversation, settings: TeacherSettings, seed: int) -> Answer:
    for attempt in range(settings.max_retries + 1):
        try:
            return await teacher.answer(messages, settings, seed)
        except Transient as exc:
            if attempt == settings.max_retries:
                raise TeacherError(
                    f"the teacher failed {attempt + 1} times in a row; last error: {exc}"
                ) from exc
            pause = 0.5 * 2**attempt * (1 + random.random())
            log.info("teacher error (%s); retrying in %.1f s", exc, pause)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


def _read_progress(path: Path) -> dict[tuple[int, int], dict[str, object]]:
    done: dict[tuple[int, int], dict[str, object]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed worker: asked again
                continue
            done[(int(row["prompt"]), int(row["sample"]))] = row
    return done


async def generate_answers(
    prompts: Sequence[Conversation],
    teacher: Teacher,
    settings: TeacherSettings,
    progress_file: Path,
    *,
    screen: Screen | None = None,
    seed: int = 0,
    report: Callable[[Progress], Awaitable[None] | None] | None = None,
) -> tuple[list[Conversation], Progress]:
    """Ask the teacher every prompt (``samples_per_prompt`` times); the kept conversations, and counts.

    Each result is appended to ``progress_file`` (JSON lines) as it arrives; results already there are
    not asked again.
    """
    done = _read_progress(progress_file)
    progress = Progress(total=len(prompts) * settings.samples_per_prompt)
    seen: dict[int, set[str]] = {}
    for (index, _), row in sorted(done.items()):
        _count(progress, row.get("dropped"))
        if isinstance(answer := row.get("answer"), str):
            seen.setdefault(index, set()).add(_normalized(answer))
    todo = [
        (index, sample)
        for index in range(len(prompts))
        for sample in range(settings.samples_per_prompt)
        if (index, sample) not in done
    ]
    gate = asyncio.Semaphore(settings.concurrency)
    lock = asyncio.Lock()
    progress_file.parent.mkdir(parents=True, exist_ok=True)

    async def one(index: int, sample: int, sink: TextIO) -> None:
        async with gate:
            answer = await _ask(teacher, prompts[index], settings, seed + index * 1000 + sample)
        async with lock:
            text, reason = _judge(answer, screen, seen.setdefault(index, set()))
            row: dict[str, object] = {"prompt": index, "sample": sample, "answer": text, "dropped": reason}
            done[(index, sample)] = row
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            _count(progress, reason)
            if progress.answered >= settings.garbage_after and progress.kept == 0:
                raise TeacherError(f"the teacher's first answers were all unusable ({progress.summary()})")
            if report is not None and (result := report(progress)) is not None:
                await result

    with progress_file.open("a", encoding="utf-8") as sink:
        tasks = [asyncio.create_task(one(index, sample, sink)) for index, sample in todo]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    kept = [
        [*prompts[index], {"role": "assistant", "content": str(row["answer"])}]
        for (index, _), row in sorted(done.items())
        if isinstance(row.get("answer"), str)
    ]
    return kept, progress


def _count(progress: Progress, reason: object) -> None:
    progress.answered += 1
    if reason:
        progress.dropped[str(reason)] += 1
    else:
        progress.kept += 1
