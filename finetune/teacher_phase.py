"""Phase 1 of a distillation job: the teacher answers the prompt file; the kept answers become the
job's training file (``TrainingConfig.training_file``), which phase 2 trains on like any other.

Progress goes to the job's events through the training observer; its cancel flag is read after every
answer. Re-running after a lost worker asks the teacher only what the progress file lacks.
"""

from __future__ import annotations

import asyncio
import json

from finetune.config import TrainingConfig
from finetune.distill import (
    Conversation,
    DistillationConfig,
    Progress,
    Screen,
    TeacherError,
    generate_answers,
    make_teacher,
)
from finetune.files import read_chat_jsonl
from finetune.progress import TrainingObserver, TrainingStopped

#: The teacher's answers as they arrive (what makes phase 1 resumable), in the job's folder.
PROGRESS_FILE = "teacher-answers.jsonl"


def _screen(distillation: DistillationConfig) -> Screen:
    from safety.guard import Guard
    from safety.lexicon import Lexicon
    from safety.policy import DEFAULT_POLICY_FILE, load_policy

    return Screen(Guard(Lexicon.load()), load_policy(distillation.policy_file or DEFAULT_POLICY_FILE))


def run_teacher_phase(
    distillation: DistillationConfig, config: TrainingConfig, observer: TrainingObserver
) -> Progress:
    """Ask the teacher, write the training file; raises ``TeacherError`` or ``TrainingStopped``."""
    assert distillation.prompt_file is not None
    prompts = read_chat_jsonl(distillation.prompt_file)
    spec, settings = distillation.teacher, distillation.generation
    total = len(prompts) * settings.samples_per_prompt
    observer.message(
        f"Phase 1: teacher {spec.model!r} at {spec.location} answers {len(prompts)} prompts "
        f"x {settings.samples_per_prompt} (concurrency {settings.concurrency})"
    )
    every = max(1, total // 20)

    def report(progress: Progress) -> None:
        if progress.answered % every == 0 or progress.answered == progress.total:
            observer.message(f"Phase 1: {progress.summary()}")
        if observer.should_stop():
            raise TrainingStopped("the job was cancelled")

    async def ask_all() -> tuple[list[Conversation], Progress]:
        teacher = make_teacher(spec)
        try:
            return await generate_answers(
                prompts,
                teacher,
                settings,
                config.output_dir / PROGRESS_FILE,
                screen=_screen(distillation),
                seed=config.seed,
                report=report,
            )
        finally:
            await teacher.close()  # inside the event loop: its connections close cleanly

    kept, progress = asyncio.run(ask_all())
    if not kept:
        raise TeacherError(f"the teacher gave no usable answer ({progress.summary()})")
    config.training_file.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"messages": conversation}, ensure_ascii=False) for conversation in kept]
    config.training_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    observer.message(f"Phase 1 done: {progress.summary()}; phase 2 trains on {len(kept)} conversations")
    return progress
