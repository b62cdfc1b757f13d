"""Distillation phase 1: a real teacher (this service's default model, over its OpenAI and Ollama APIs)
answers prompts; resume, drops, and teachers that fail."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from finetune.distill import (
    Answer,
    LocalTeacher,
    OllamaTeacher,
    OpenAITeacher,
    Screen,
    Teacher,
    TeacherError,
    TeacherSettings,
    TeacherSpec,
    generate_answers,
)
from safety.guard import Guard
from safety.lexicon import Lexicon
from safety.policy import Policy
from tests.conftest import MODEL, Server, _free_port

PROMPTS = [
    [{"role": "user", "content": question}]
    for question in (
        "How do I reset my password?",
        "Where is my parcel?",
        "Can I change my delivery address?",
        "Do you ship to Canada?",
    )
]
SETTINGS = TeacherSettings(temperature=0, max_tokens=200, concurrency=2, max_retries=1)


def openai_teacher(server: Server) -> OpenAITeacher:
    return OpenAITeacher(
        TeacherSpec(kind="openai", base_url=f"{server.url}/v1", model=MODEL, api_key=server.admin_key)
    )


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_the_services_own_model_teaches_over_its_apis(server: Server, tmp_path: Path, kind: str) -> None:
    spec = TeacherSpec(
        kind=kind,  # type: ignore[arg-type]
        base_url=f"{server.url}/v1" if kind == "openai" else server.url,
        model=MODEL,
        api_key=server.admin_key,
    )
    teacher = OpenAITeacher(spec) if kind == "openai" else OllamaTeacher(spec)
    reports: list[str] = []
    kept, progress = asyncio.run(
        generate_answers(
            PROMPTS,
            teacher,
            SETTINGS,
            tmp_path / "answers.jsonl",
            report=lambda p: reports.append(p.summary()),
        )
    )
    assert progress.answered == 4 and progress.kept + sum(progress.dropped.values()) == 4
    # Some of these questions send the small model into a loop until max_tokens, and which ones does
    # depends on bfloat16 rounding (the batch's shape, drafted openings): those are dropped as truncated.
    assert progress.kept >= 1, progress.summary()
    assert len(kept) == progress.kept and len(reports) == 4
    for conversation in kept:
        assert conversation[:-1] in PROMPTS
        assert conversation[-1]["role"] == "assistant" and conversation[-1]["content"].strip()
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert sorted(row["prompt"] for row in rows) == [0, 1, 2, 3]


class Counting:
    """A real teacher that counts its calls, and can die (like a killed worker) after some of them."""

    def __init__(self, inner: Teacher, die_after: int | None = None) -> None:
        self.inner, self.die_after, self.calls = inner, die_after, 0

    async def answer(self, messages: list[dict[str, str]], settings: TeacherSettings, seed: int) -> Answer:
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt  # the worker process is gone
        self.calls += 1
        return await self.inner.answer(messages, settings, seed)


def test_a_restarted_run_asks_only_what_is_missing(server: Server, tmp_path: Path) -> None:
    progress_file = tmp_path / "answers.jsonl"
    settings = SETTINGS.model_copy(update={"concurrency": 1, "samples_per_prompt": 2, "temperature": 0.9})
    dying = Counting(openai_teacher(server), die_after=3)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(generate_answers(PROMPTS, dying, settings, progress_file))
    assert len(progress_file.read_text().splitlines()) == 3
    with progress_file.open("a") as sink:
        sink.write('{"prompt": 3, "sam')  # the line a killed worker was writing

    resumed = Counting(openai_teacher(server))
    kept, progress = asyncio.run(generate_answers(PROMPTS, resumed, settings, progress_file))
    assert resumed.calls == 8 - 3  # the 3 answers already paid for are not asked again
    assert progress.answered == 8 and len(kept) == progress.kept


class Scripted:
    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers

    async def answer(self, messages: list[dict[str, str]], settings: TeacherSettings, seed: int) -> Answer:
        return self.answers[seed % 1000 % len(self.answers)] if len(self.answers) > 1 else self.answers[0]


def test_unusable_answers_are_dropped_and_counted(tmp_path: Path) -> None:
    answers = [
        Answer("Your parcel ships Monday.", truncated=False),
        Answer("Your parcel ships Monday.", truncated=False),  # the same again for this prompt
        Answer("   ", truncated=False),
        Answer("It ships on", truncated=True),
        Answer("You shit head. Then kill yourself now please.", truncated=False),
        Answer("Write to ana@example.com about it.", truncated=False),
    ]
    screen = Screen(Guard(Lexicon.load()), Policy())
    settings = TeacherSettings(samples_per_prompt=6, concurrency=1)
    kept, progress = asyncio.run(
        generate_answers(PROMPTS[:1], Scripted(answers), settings, tmp_path / "a.jsonl", screen=screen)
    )
    assert dict(progress.dropped) == {"duplicate": 1, "empty": 1, "truncated": 1, "unsafe": 1}
    assert [c[-1]["content"] for c in kept] == ["Your parcel ships Monday.", "Write to [EMAIL] about it."]


def test_a_teacher_answering_garbage_fails_the_run(tmp_path: Path) -> None:
    settings = TeacherSettings(garbage_after=3, concurrency=1)
    with pytest.raises(TeacherError, match="all unusable"):
        asyncio.run(generate_answers(PROMPTS, Scripted([Answer("", False)]), settings, tmp_path / "a.jsonl"))


def test_an_unreachable_teacher_fails_after_its_retries(tmp_path: Path) -> None:
    spec = TeacherSpec(kind="openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m", timeout=5)
    settings = TeacherSettings(max_retries=1)
    with pytest.raises(TeacherError, match="failed 2 times in a row"):
        asyncio.run(generate_answers(PROMPTS, OpenAITeacher(spec), settings, tmp_path / "a.jsonl"))


def test_a_teacher_that_refuses_fails_at_once(server: Server, tmp_path: Path) -> None:
    spec = TeacherSpec(
        kind="openai", base_url=f"{server.url}/v1", model="no-such-model", api_key=server.admin_key
    )
    with pytest.raises(TeacherError, match="refused the request \\(404\\)"):
        asyncio.run(generate_answers(PROMPTS, OpenAITeacher(spec), SETTINGS, tmp_path / "a.jsonl"))


def test_the_api_key_is_never_shown() -> None:
    spec = TeacherSpec(kind="openai", base_url="http://x/v1", model="m", api_key="sk-secret-123")
    assert "sk-secret-123" not in repr(spec) and "sk-secret-123" not in spec.model_dump_json()


def test_a_local_teacher_answers_in_process_and_reports_truncation(tmp_path: Path) -> None:
    from assistant.model_store import resolve_model_dir
    from assistant.settings import Settings

    spec = TeacherSpec(kind="local", model=MODEL, path=resolve_model_dir(None, Settings().cache_dir))
    teacher = LocalTeacher(spec)

    async def ask(settings: TeacherSettings) -> list[Answer]:
        return [await teacher.answer(prompt, settings, seed=1) for prompt in PROMPTS[:2]]

    whole = asyncio.run(ask(SETTINGS))
    assert all(answer.text.strip() for answer in whole)
    assert not all(answer.truncated for answer in whole)  # one ends within 200 tokens, with its end of turn
    assert "<|im_end|>" not in whole[0].text
    cut = asyncio.run(ask(SETTINGS.model_copy(update={"max_tokens": 3})))
    assert all(answer.truncated for answer in cut)
    assert asyncio.run(ask(SETTINGS)) == whole  # temperature 0: the same answers again

    missing = LocalTeacher(TeacherSpec(kind="local", model=str(tmp_path / "nothing")))
    with pytest.raises(TeacherError, match="cannot load the local teacher"):
        asyncio.run(missing.answer(PROMPTS[0], SETTINGS, seed=1))
