"""Distillation benchmark, first part: how fast a teacher answers prompts at concurrency 1 and 8.

    nice -n 5 .venv/bin/python bench/distill.py [--prompts 16] [--max-tokens 64] [--repeats 2]

The teacher is this service's default model over its OpenAI API (``assistant serve`` started here on a
temporary data dir, safety on, as production would run it); the prompts are the held-out questions of
``bench/finetune_data``. Phase 1 of a distillation job (``finetune.distill.generate_answers``) asks every
prompt once per run, alternating concurrency 1 and 8, ``--repeats`` times each; the table gives the
median prompts/s and answered tokens/s and their ratio. The other figures the distillation issue asks
for (student accuracy after black-box, logits and on-policy distillation) come with those modes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.finetune import BASE_MODEL, DATA, Service, log, machine  # noqa: E402
from finetune.distill import (  # noqa: E402
    Answer,
    OpenAITeacher,
    Progress,
    TeacherSettings,
    TeacherSpec,
    generate_answers,
)

Conversation = list[dict[str, str]]


class Measured:
    """The teacher, counting the characters of what it answered."""

    def __init__(self, inner: OpenAITeacher) -> None:
        self.inner, self.characters = inner, 0

    async def answer(self, messages: Conversation, settings: TeacherSettings, seed: int) -> Answer:
        answer = await self.inner.answer(messages, settings, seed)
        self.characters += len(answer.text)
        return answer


def run_once(
    spec: TeacherSpec, prompts: list[Conversation], concurrency: int, max_tokens: int, work: Path
) -> dict[str, float]:
    teacher = Measured(OpenAITeacher(spec))
    settings = TeacherSettings(temperature=0.7, max_tokens=max_tokens, concurrency=concurrency)
    progress_file = work / f"answers-{concurrency}-{time.monotonic_ns()}.jsonl"

    async def ask_all() -> Progress:
        try:
            return (await generate_answers(prompts, teacher, settings, progress_file))[1]
        finally:
            await teacher.inner.close()

    started = time.perf_counter()
    progress = asyncio.run(ask_all())
    seconds = time.perf_counter() - started
    log(f"concurrency {concurrency}: {progress.summary()} in {seconds:.1f} s")
    return {
        "seconds": seconds,
        "prompts_per_second": len(prompts) / seconds,
        "chars_per_second": teacher.characters / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    options = parser.parse_args()

    questions = [json.loads(line)["question"] for line in (DATA / "heldout.jsonl").read_text().splitlines()]
    prompts = [[{"role": "user", "content": q}] for q in questions[: options.prompts]]
    log(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as folder:
        work = Path(folder)
        service = Service(work / "service", {})
        service.data_dir.mkdir()
        service.start()
        try:
            key = (service.data_dir / "admin-key.txt").read_text().strip()
            spec = TeacherSpec(kind="openai", base_url=f"{service.url}/v1", model=BASE_MODEL, api_key=key)
            runs: dict[int, list[dict[str, float]]] = {1: [], 8: []}
            for _ in range(options.repeats):
                for concurrency in runs:
                    runs[concurrency].append(run_once(spec, prompts, concurrency, options.max_tokens, work))
        finally:
            service.stop()
    median = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in runs.items()}
    one, eight = median[1], median[8]
    setting = f"median of {options.repeats}, {len(prompts)} prompts, <= {options.max_tokens} tokens"
    print("\n| teacher: this service's default model, OpenAI API, safety on | concurrency 1 | 8 | 8 / 1 |")
    print("| --- | --- | --- | --- |")
    for key, what in (("prompts_per_second", "prompts/s"), ("chars_per_second", "answer characters/s")):
        print(f"| {what} ({setting}) | {one[key]:.2f} | {eight[key]:.2f} | {eight[key] / one[key]:.2f} |")
    if options.json:
        options.json.write_text(json.dumps({"machine": machine(), "runs": runs, "median": median}, indent=2))


if __name__ == "__main__":
    main()
