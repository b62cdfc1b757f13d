"""Distillation benchmark, second part: what black-box, logits and on-policy distillation each buy.

    nice -n 5 .venv/bin/python bench/distill_modes.py --teacher DIR [--prompts 256] [--epochs 3]
        [--modes black_box,logits,on_policy] [--work DIR] [--json FILE]

The teacher is a model that knows the domain of ``bench/finetune_data`` (the Kestrelmoor outdoor shop):
``--teacher`` names its directory, e.g. the ``merged/`` folder of an ``assistant finetune run
bench/distill_teacher.toml`` on ``--split-only``'s ``teacher-train.jsonl`` (the training file without
the validation conversations). The student is the base model (SmolLM2-135M-Instruct).

1. Phase 1, as a distillation job runs it (``finetune.distill.generate_answers``, a local teacher, the
   service's output checks): the teacher answers ``--prompts`` of the training questions (seeded choice;
   the training file's own answers are never shown to the student). All modes train on these answers.
2. Phase 2, once per mode, with the supervised recipe of the fine-tuning benchmark (QLoRA r128, alpha 256,
   lr 1e-3, batch 8): ``black_box`` (CE on the teacher's answers), ``logits`` (+ KL to the teacher's
   token probabilities on those answers) and ``on_policy`` (+ KL on the student's own sampled answers),
   with the default loss (ce_weight 0.7, temperature 4.0); ``--sweep`` adds logits runs with other values.
3. Every model (base, teacher, students) answers the 68 held-out questions greedily with the service's
   system prompt, in the precision the service would serve it (``model.dtype`` auto; accuracy: the fact
   stated), and its CE on the assistant tokens of a held-out 10% of the
   training file (eval loss, the reference answers) is measured.

Phase 1 answers and each trained student are kept in ``--work`` and reused by a later run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.finetune import (  # noqa: E402
    DATA,
    assistant_token_loss,
    base_model_dir,
    load_facts,
    load_questions,
    log,
    machine,
    plain_config,
    read_jsonl,
    states_fact,
    write_jsonl,
)
from finetune.config import DistillationLoss, Hyperparameters, TrainingConfig, WhiteBox  # noqa: E402
from finetune.console import ConsoleObserver  # noqa: E402
from finetune.distill import LocalTeacher, Screen, TeacherSettings, TeacherSpec, generate_answers  # noqa: E402
from finetune.training import train  # noqa: E402

Conversation = list[dict[str, str]]
RECIPE = Hyperparameters(n_epochs=3, batch_size=8, learning_rate_multiplier=5, lora_r=128, lora_alpha=256)
SEED = 42


@dataclass(frozen=True)
class Variant:
    name: str
    white_box: WhiteBox | None


def variants(modes: list[str], teacher: str, sweep: bool) -> list[Variant]:
    chosen = [
        Variant(mode, None if mode == "black_box" else WhiteBox(mode=mode, teacher_model=teacher))  # type: ignore[arg-type]
        for mode in modes
    ]
    if sweep:
        for ce_weight, temperature in ((0.3, 4.0), (0.7, 1.0)):
            loss = DistillationLoss(ce_weight=ce_weight, temperature=temperature)
            chosen.append(
                Variant(
                    f"logits ce_weight={ce_weight} T={temperature}",
                    WhiteBox(mode="logits", teacher_model=teacher, loss=loss),
                )
            )
    return chosen


def splits(prompts: int, work: Path) -> tuple[list[Conversation], Path]:
    """The prompts the teacher answers and the validation file (reference answers) for the eval loss."""
    examples = [row["messages"] for row in read_jsonl(DATA / "train.jsonl")]
    order = list(range(len(examples)))
    random.Random(SEED).shuffle(order)
    held = order[: round(len(examples) * 0.1)]
    validation = write_jsonl(work / "validation.jsonl", [{"messages": examples[i]} for i in held])
    rest = sorted(set(order) - set(held))
    write_jsonl(work / "teacher-train.jsonl", [{"messages": examples[i]} for i in rest])  # the teacher's
    chosen = order[len(held) : len(held) + prompts]
    return [examples[i][:-1] for i in chosen], validation


def teacher_answers(teacher: str, prompts: list[Conversation], work: Path) -> tuple[Path, dict[str, Any]]:
    from safety.guard import Guard
    from safety.lexicon import Lexicon
    from safety.policy import DEFAULT_POLICY_FILE, load_policy

    target = work / "distilled.jsonl"
    settings = TeacherSettings(temperature=0.0, max_tokens=96, concurrency=1)
    screen = Screen(Guard(Lexicon.load()), load_policy(DEFAULT_POLICY_FILE))
    spec = TeacherSpec(kind="local", model=teacher)

    async def ask() -> Any:
        local = LocalTeacher(spec)
        try:
            return await generate_answers(
                prompts,
                local,
                settings,
                work / "teacher-answers.jsonl",
                screen=screen,
                seed=SEED,
                report=lambda p: log(f"phase 1: {p.summary()}") if p.answered % 25 == 0 else None,
            )
        finally:
            await local.close()

    started = time.perf_counter()
    kept, progress = asyncio.run(ask())
    seconds = time.perf_counter() - started
    write_jsonl(target, [{"messages": conversation} for conversation in kept])
    log(f"phase 1 done: {progress.summary()} in {seconds:.0f} s")
    return target, {"summary": progress.summary(), "kept": len(kept), "seconds": seconds}


def train_student(
    variant: Variant, training: Path, validation: Path, epochs: int, work: Path
) -> dict[str, Any]:
    output = work / variant.name.replace(" ", "_").replace("=", "")
    merged = output / "merged"
    summary = output / "summary.json"
    if summary.exists() and merged.is_dir():
        log(f"{variant.name}: reusing {merged}")
        return dict(json.loads(summary.read_text()))
    config = TrainingConfig(
        base_model=base_model_dir(),
        training_file=training,
        validation_file=validation,
        output_dir=output,
        seed=SEED,
        hyperparameters=RECIPE.model_copy(update={"n_epochs": epochs}),
        white_box=variant.white_box,
    )
    log(f"{variant.name}: training")
    started = time.perf_counter()
    result = train(config, ConsoleObserver())
    seconds = time.perf_counter() - started
    figures = {
        "merged": str(result.merged_dir),
        "train_seconds": seconds,
        "steps": result.final.total_steps,
        "seconds_per_step": seconds / max(1, result.final.total_steps),
    }
    summary.write_text(json.dumps(figures))
    return figures


def accuracy(model_dir: str, limit: int | None) -> tuple[int, int]:
    """Held-out questions whose greedy answer (service system prompt, 64 tokens) states the fact."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from assistant.backends.hf import weights_dtype
    from assistant.chat import system_instruction, with_system
    from assistant.settings import ChatSettings

    facts, questions = load_facts(), load_questions(limit)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, config=plain_config(AutoConfig.from_pretrained(model_dir)), dtype=weights_dtype("auto")
    )
    model.eval()
    system = system_instruction(ChatSettings().system_prompt, "friendly", {})
    right = 0
    for question in questions:
        messages = with_system([{"role": "user", "content": question.question}], system)
        prompt = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            output = model.generate(**prompt, max_new_tokens=64, do_sample=False)
        answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        right += states_fact(answer, facts[question.fact])
    return right, len(questions)


def measure(name: str, model_dir: str, validation: Path, questions: int | None) -> dict[str, Any]:
    right, total = accuracy(model_dir, questions)
    loss, tokens = assistant_token_loss(model_dir, [row["messages"] for row in read_jsonl(validation)])
    log(f"{name}: {right}/{total} held-out facts, eval loss {loss:.3f} ({tokens} tokens)")
    return {"right": right, "total": total, "eval_loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", help="the domain teacher's model directory")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--questions", type=int, help="ask only the first N held-out questions (a smoke run)")
    parser.add_argument("--modes", default="black_box,logits,on_policy")
    parser.add_argument("--sweep", action="store_true", help="also logits with ce_weight 0.3 and with T 1")
    parser.add_argument("--work", type=Path, default=Path("bench-distill-modes"))
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--split-only", action="store_true", help="write the teacher's training file and the validation file"
    )
    options = parser.parse_args()

    if not (options.teacher or options.split_only):
        parser.error("--teacher is required (or --split-only)")
    options.work.mkdir(parents=True, exist_ok=True)
    log(f"machine: {machine()}")
    prompts, validation = splits(options.prompts, options.work)
    if options.split_only:
        log(f"wrote {options.work / 'teacher-train.jsonl'} and {validation}")
        return
    distilled, phase1 = teacher_answers(options.teacher, prompts, options.work)
    results: dict[str, Any] = {"machine": machine(), "phase1": phase1, "models": {}}
    results["models"]["base"] = measure("base", base_model_dir(), validation, options.questions)
    results["models"]["teacher"] = measure("teacher", options.teacher, validation, options.questions)
    for variant in variants(options.modes.split(","), options.teacher, options.sweep):
        trained = train_student(variant, distilled, validation, options.epochs, options.work)
        results["models"][variant.name] = {
            **trained,
            **measure(variant.name, trained["merged"], validation, options.questions),
        }
        if options.json:
            options.json.write_text(json.dumps(results, indent=2))

    print(
        f"\nphase 1: {phase1['summary']} in {phase1['seconds']:.0f} s; {options.epochs} epochs per student\n"
    )
    print(
        "| model | held-out facts stated | eval loss (reference answers) | wall s/step (with load, merge) |"
    )
    print("| --- | --- | --- | --- |")
    for name, figures in results["models"].items():
        share = f"{figures['right']}/{figures['total']} ({figures['right'] / figures['total']:.1%})"
        per_step = f"{figures['seconds_per_step']:.2f}" if "seconds_per_step" in figures else ""
        print(f"| {name} | {share} | {figures['eval_loss']:.3f} | {per_step} |")


if __name__ == "__main__":
    main()
