"""Fine-tuning jobs as the API sees them: create, read, list, cancel; events and checkpoints.

Statuses: ``validating_files`` -> ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` |
``cancelled``. The worker side (claiming, training, recovery) is ``finetune.runner``.

Raises ``JobError`` (a request that cannot be honoured; ``param`` names the field) and ``JobNotFound``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from finetune.config import Hyperparameters, TrainingConfig
from finetune.distill import DistillationConfig
from finetune.file_store import FileNotFound, file_path, get_file
from finetune.models import CheckpointRow, JobEventRow, JobRow, TrainedModelRow, new_id, utcnow

UNFINISHED = ("validating_files", "queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
#: The training file a distillation job writes in its folder (the teacher's kept answers).
DISTILLED = "distilled.jsonl"
SUFFIX = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class JobError(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.code = param, code


class JobNotFound(Exception):
    pass


@dataclass(frozen=True)
class JobRequest:
    model: str
    base_model_path: str  # what from_pretrained loads for ``model``
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    hyperparameters: Hyperparameters
    created_by: str
    #: Set for a distillation job: ``training_file`` is then its prompt file.
    distillation: DistillationConfig | None = None


def model_name(base: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{suffix or ''}:{job_id}"


def create_job(session: Session, request: JobRequest, *, files_dir: Path, jobs_dir: Path) -> JobRow:
    """Check the files and write the job, ``queued``; the caller then hands its id to a worker."""
    if request.suffix is not None and not SUFFIX.fullmatch(request.suffix):
        raise JobError(
            "suffix must be 1-40 characters of lowercase letters, digits, '-' and '_'", param="suffix"
        )
    for param in ("training_file", "validation_file"):
        file_id = getattr(request, param)
        if file_id is None:
            continue
        try:
            found = get_file(session, file_id)
        except FileNotFound as exc:
            raise JobError(f"{param}: {exc}", param=param) from exc
        wanted = "distillation" if request.distillation and param == "training_file" else "fine-tune"
        if found.purpose != wanted:
            raise JobError(f"{param}: file {file_id} has purpose {found.purpose!r}, not {wanted!r}", param)
    job_id = new_id("ftjob")
    # A distillation job trains on the answers its teacher writes (phase 1) into its own folder.
    training = (
        jobs_dir / job_id / DISTILLED if request.distillation else file_path(files_dir, request.training_file)
    )
    config = TrainingConfig(
        base_model=request.base_model_path,
        training_file=training,
        validation_file=file_path(files_dir, request.validation_file) if request.validation_file else None,
        output_dir=jobs_dir / job_id,
        seed=request.seed,
        hyperparameters=request.hyperparameters,
        white_box=request.distillation.white_box() if request.distillation else None,
    )
    method = _method(request)
    stored = config.model_dump(mode="json")
    if request.distillation is not None:
        distillation = request.distillation.model_copy(
            update={"prompt_file": file_path(files_dir, request.training_file)}
        )
        # The worker needs the teacher's key, so the stored config has it; the API never shows it.
        stored["distillation"] = distillation.model_dump(mode="json", context={"reveal_secrets": True})
    job = JobRow(
        id=job_id,
        created_by=request.created_by,
        model=request.model,
        training_file=request.training_file,
        validation_file=request.validation_file,
        suffix=request.suffix,
        seed=request.seed,
        method=method,
        config=stored,
        status="queued",
    )
    session.add(job)
    session.flush()  # the job row exists before its first event refers to it
    add_event(session, job_id, f"Validated training file {request.training_file}; job queued")
    session.commit()
    return job


def _method(request: JobRequest) -> dict[str, Any]:
    """The job's method as the API shows it (a teacher's API key masked)."""
    hyperparameters = request.hyperparameters.model_dump()
    if request.distillation is None:
        return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    distillation = request.distillation
    shown = distillation.model_dump(
        mode="json", include={"mode", "teacher", "generation"}, exclude={"teacher": {"path"}}
    )
    if distillation.mode != "black_box":
        shown["loss"] = distillation.loss.model_dump()
    if distillation.mode == "on_policy":
        shown["on_policy"] = distillation.on_policy.model_dump()
    return {"type": "distillation", "distillation": {**shown, "hyperparameters": hyperparameters}}


def get_job(session: Session, job_id: str) -> JobRow:
    job = session.get(JobRow, job_id)
    if job is None:
        raise JobNotFound(f"no fine-tuning job with id {job_id!r}")
    return job


def add_event(
    session: Session, job_id: str, message: str, level: str = "info", data: dict[str, Any] | None = None
) -> None:
    session.add(
        JobEventRow(
            job_id=job_id, level=level, type="metrics" if data else "message", message=message, data=data
        )
    )


def note(session: Session, job_id: str, message: str, level: str = "info") -> None:
    add_event(session, job_id, message, level)
    session.commit()


def request_cancel(session: Session, job_id: str) -> JobRow:
    """A queued job is cancelled now; a running one at its next training step (the worker checks)."""
    job = get_job(session, job_id)
    if job.status in FINISHED:
        raise JobError(f"job {job_id} has already {job.status}; only unfinished jobs can be cancelled")
    if job.status == "running":
        job.cancel_requested = True
        add_event(session, job_id, "Cancellation requested; the job stops after its current step")
    else:
        job.status, job.finished_at = "cancelled", utcnow()
        add_event(session, job_id, "Job cancelled before it started")
    session.commit()
    return job


def list_jobs(session: Session, limit: int, after: str | None) -> tuple[list[JobRow], bool]:
    return _paged_by_creation(session, select(JobRow), JobRow, limit, after)


def list_events(
    session: Session, job_id: str, limit: int, after: str | None
) -> tuple[list[JobEventRow], bool]:
    get_job(session, job_id)
    query = select(JobEventRow).where(JobEventRow.job_id == job_id)
    if after is not None:
        query = query.where(JobEventRow.id < event_number(after))
    rows = list(session.scalars(query.order_by(JobEventRow.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_checkpoints(
    session: Session, job_id: str, limit: int, after: str | None
) -> tuple[list[CheckpointRow], bool]:
    get_job(session, job_id)
    query = select(CheckpointRow).where(CheckpointRow.job_id == job_id)
    return _paged_by_creation(session, query, CheckpointRow, limit, after)


def _paged_by_creation(
    session: Session, query: Any, table: Any, limit: int, after: str | None
) -> tuple[list[Any], bool]:
    """Newest first (ties by id), starting after the item whose id is ``after``."""
    if after is not None:
        anchor = session.get(table, after)
        if anchor is None:
            raise JobError(f"after: no item with id {after!r}", param="after")
        query = query.where(
            (table.created_at < anchor.created_at)
            | ((table.created_at == anchor.created_at) & (table.id > anchor.id))
        )
    rows = list(session.scalars(query.order_by(table.created_at.desc(), table.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def event_id(number: int) -> str:
    return f"ftevent-{number}"


def event_number(event: str) -> int:
    try:
        return int(event.removeprefix("ftevent-"))
    except ValueError:
        raise JobError(f"after: {event!r} is not an event id", param="after") from None


def list_models(session: Session) -> list[TrainedModelRow]:
    return list(session.scalars(select(TrainedModelRow).order_by(TrainedModelRow.created_at)))


def find_model(session: Session, name: str) -> TrainedModelRow | None:
    return session.get(TrainedModelRow, name)


def delete_model(session: Session, name: str) -> None:
    """Stop serving a fine-tuned model and delete its merged weights (the small adapter stays)."""
    row = session.get(TrainedModelRow, name)
    if row is None:
        raise JobNotFound(f"no fine-tuned model named {name!r}")
    session.delete(row)
    session.commit()
    shutil.rmtree(row.path, ignore_errors=True)
