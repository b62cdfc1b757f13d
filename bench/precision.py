"""Precision benchmark: the default model in float32, in bfloat16, and in bfloat16 and in float32 with its
4-bit layers and 8-bit output layer (``model.four_bit``), for closeness to float32 and for decoding speed,
in one run.

    .venv/bin/python bench/precision.py [--prompts 32] [--tokens 64] [--rounds 3]

Closeness, teacher-forced: float32 answers each held-out customer question of ``bench/finetune_data``
greedily; each precision then decodes the same tokens one at a time (one row per step, as a decoding
step of the service computes them), and at every position we count whether its most likely next token
is float32's, and the KL divergence of float32's next-token distribution from it.

Speed: median seconds of one decoding step (one new token per row, a KV cache of a 60-token prompt) at
batches of 1 and 8, the precisions taking turns for ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.finetune import DATA, base_model_dir, log, machine, read_jsonl  # noqa: E402

PRECISIONS = {
    "float32": ("float32", False),
    "bfloat16": ("bfloat16", False),
    "bfloat16 + 4-bit/8-bit": ("bfloat16", True),
    "float32 + 4-bit/8-bit": ("float32", True),
}


def stepwise_log_probs(model: Any, ids: Any, prompt_length: int) -> Any:
    """Next-token log-probabilities after the prompt and after each answer token, decoded one at a time."""
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        output = model(input_ids=ids[:, :prompt_length], past_key_values=DynamicCache(config=model.config))
        rows = [output.logits[0, -1]]
        for position in range(prompt_length, ids.shape[1] - 1):
            output = model(input_ids=ids[:, position : position + 1], past_key_values=output.past_key_values)
            rows.append(output.logits[0, -1])
        return torch.stack(rows).float().log_softmax(dim=-1)


def closeness(models: dict[str, Any], questions: list[str], tokens: int) -> dict[str, dict[str, float]]:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    agree: dict[str, list[bool]] = {name: [] for name in models if name != "float32"}
    divergence: dict[str, list[float]] = {name: [] for name in agree}
    for number, question in enumerate(questions, 1):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.inference_mode():
            answer = models["float32"].generate(prompt, max_new_tokens=tokens, do_sample=False)
        reference = stepwise_log_probs(models["float32"], answer, prompt.shape[1])
        for name in agree:
            got = stepwise_log_probs(models[name], answer, prompt.shape[1])
            agree[name] += (got.argmax(-1) == reference.argmax(-1)).tolist()
            kl = torch.nn.functional.kl_div(got, reference, log_target=True, reduction="none").sum(-1)
            divergence[name] += kl.tolist()
        if number % 8 == 0:
            log(f"closeness: {number}/{len(questions)} questions")
    return {
        name: {
            "tokens": len(agree[name]),
            "top1_agreement": statistics.mean(agree[name]),
            "kl_mean": statistics.mean(divergence[name]),
        }
        for name in agree
    }


def step_seconds(model: Any, batch: int, prompt_length: int = 60, steps: int = 24) -> float:
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        ids = torch.randint(100, 10_000, (batch, prompt_length), generator=torch.Generator().manual_seed(0))
        output = model(input_ids=ids, past_key_values=DynamicCache(config=model.config), logits_to_keep=1)
        last, times = output.logits[:, -1:].argmax(-1), []
        for _ in range(steps):
            started = time.perf_counter()
            output = model(input_ids=last, past_key_values=output.past_key_values)
            times.append(time.perf_counter() - started)
            last = output.logits[:, -1:].argmax(-1)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    from assistant.backends.hf import load_model

    log(f"machine: {machine()}")
    models, converted = {}, {}
    for name, (dtype, four_bit) in PRECISIONS.items():
        models[name], converted[name] = load_model(base_model_dir(), dtype, four_bit=four_bit)
    log(f"layers decoded from 4-bit or 8-bit weights: {converted['bfloat16 + 4-bit/8-bit']}")
    questions = [row["question"] for row in read_jsonl(DATA / "heldout.jsonl")][: options.prompts]
    close = closeness(models, questions, options.tokens)

    speeds: dict[tuple[str, int], list[float]] = {}
    for _, batch, name in itertools.product(range(options.rounds), (1, 8), models):
        speeds.setdefault((name, batch), []).append(step_seconds(models[name], batch))
    step = {key: statistics.median(values) for key, values in speeds.items()}

    print(
        "\n| precision | top-1 agrees with float32 | mean KL from float32 | step, batch 1 | step, batch 8 |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in models:
        figures = close.get(name)
        agreement = f"{figures['top1_agreement']:.2%} of {figures['tokens']}" if figures else "(reference)"
        kl = f"{figures['kl_mean']:.5f}" if figures else ""
        one, eight = step[(name, 1)], step[(name, 8)]
        print(
            f"| {name} | {agreement} | {kl} | {one * 1000:.1f} ms ({1 / one:.0f} tok/s) | "
            f"{eight * 1000:.1f} ms ({8 / eight:.0f} tok/s) |"
        )


if __name__ == "__main__":
    main()
