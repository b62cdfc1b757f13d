"""Admitting prompts while others decode: a packed step against a prefill then a step, in one run.

    .venv/bin/python bench/packed_step.py [--running 8] [--joining 1,2,4] [--rounds 7]

The service's own batcher (``assistant.backends.batching``, the default model loaded as the service
loads it, the service's thread count) decodes ``--running`` held-out customer questions after the
service's system instruction; then ``--joining`` more arrive. Without a packed step they are prefilled
in a pass of their own (after the cached system instruction), then the step decodes everyone; with
one, that step's single forward pass also prefills them. Printed: the medians of ``--rounds`` rounds,
the two ways taking turns, of when the joining prompts have their first token and when the running
rows have their next one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.finetune import DATA, base_model_dir, log, machine, read_jsonl  # noqa: E402


def requests(backend: Any, questions: list[str]) -> list[Any]:
    """Batcher requests for ``questions`` after the service's system instruction, ready to admit."""
    from assistant.backends.base import GenerationOptions
    from assistant.backends.batching import Request
    from assistant.chat import system_instruction
    from assistant.settings import Settings

    settings = Settings()
    system = system_instruction(settings.chat.system_prompt, settings.chat.default_style, {})
    made = []
    for question in questions:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        prompt = backend.prompt_ids(messages)
        request = Request(prompt, GenerationOptions(max_tokens=10_000, temperature=0), lambda _: None)
        request.shared_prefix = backend.shared_prefix(messages, prompt)
        made.append(request)
    backend._batcher._begin(made)
    return made


def admission(batcher: Any, running: list[Any], joining: list[Any], packed: bool) -> tuple[float, float]:
    """Seconds until the joining prompts' first tokens, and until the running rows' next ones."""
    batcher._running, batcher._mask, batcher._cache = [], None, None
    batcher._prefill(running)
    for _ in range(3):
        batcher._step([])
    start = time.perf_counter()
    if packed:
        batcher._step(joining)
        done = time.perf_counter() - start
        return done, done
    batcher._prefill(joining)
    first = time.perf_counter() - start
    batcher._step([])
    return first, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--running", type=int, default=8)
    parser.add_argument("--joining", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import torch

    from assistant.backends.hf import HFBackend

    backend = HFBackend(lambda: str(base_model_dir()))  # the service's defaults
    asyncio.run(backend.start())
    batcher = backend._batcher
    assert batcher is not None and batcher._packs, "the model's attention does not take packed steps"
    batcher._openings = None  # the packed step alone: drafted openings are measured through bench/serve.py
    torch.set_num_threads(backend._threads)  # this thread computes, as the scheduler thread would
    log(f"machine: {machine()}; {backend._threads} torch thread(s), {backend.describe()}")
    questions = [row["question"] for row in read_jsonl(DATA / "heldout.jsonl")]
    print(f"\n{args.running} rows decoding; medians of {args.rounds} rounds, seconds")
    print("| joining | prefill then step: first token | next token | packed step: both | next token ratio |")
    print("| --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        for joining in map(int, args.joining.split(",")):
            times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(args.rounds + 1):  # the first round warms up
                for packed in (False, True):
                    running = requests(backend, questions[: args.running])
                    extra = requests(backend, questions[args.running : args.running + joining])
                    times[packed].append(admission(batcher, running, extra, packed))
            separate = [statistics.median(t[i] for t in times[False][1:]) for i in (0, 1)]
            packed_time = statistics.median(t[1] for t in times[True][1:])
            print(
                f"| {joining} | {separate[0]:.3f} | {separate[1]:.3f} | {packed_time:.3f} | "
                f"{packed_time / separate[1]:.2f} |",
                flush=True,
            )
    asyncio.run(backend.close())


if __name__ == "__main__":
    main()
