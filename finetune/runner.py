"""The worker side of a job: claim it, train with events written to SQL, finish it; recover lost jobs.

A job is claimed with one conditional UPDATE (``queued`` -> ``running``), so a task delivered twice
runs once. Cancellation is cooperative: the observer reads the job's flag at every step. A worker
killed mid-job is noticed by ``recover_lost_jobs`` (run when a worker starts): its jobs go back to
``queued`` and resume from their last checkpoint, or fail once ``max_attempts`` is spent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from finetune.config import TrainingConfig
from finetune.distill import DistillationConfig, TeacherError
from finetune.file_store import store_file, store_result_file
from finetune.files import FileStats
from finetune.jobs import add_event, model_name
from finetune.modelfile import ModelfileError, for_model
from finetune.models import CheckpointRow, JobRow, TrainedModelRow, utcnow
from finetune.progress import Checkpoint, Level, Metrics, TrainingStopped
from finetune.teacher_phase import run_teacher_phase

log = logging.getLogger(__name__)

Sessions = Callable[[], Session]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(session: Session, job_id: str, worker: str) -> bool:
    now = utcnow()
    claimed = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == "queued")
        .values(status="running", worker=worker, heartbeat_at=now, attempts=JobRow.attempts + 1)
    )
    job = session.get(JobRow, job_id)
    if claimed.rowcount != 1 or job is None:  # type: ignore[attr-defined]
        session.rollback()
        return False
    job.started_at = job.started_at or now
    add_event(session, job_id, f"Job started on worker {worker} (attempt {job.attempts})")
    session.commit()
    return True


class SqlObserver:
    """Writes what training reports to the job's rows; reads its cancel flag."""

    def __init__(self, sessions: Sessions, job_id: str) -> None:
        self.sessions, self.job_id = sessions, job_id
        self.started = utcnow()

    def message(self, text: str, level: Level = "info") -> None:
        with self.sessions() as session:
            add_event(session, self.job_id, text, level)
            session.commit()

    def metrics(self, metrics: Metrics) -> None:
        data = {k: v for k, v in asdict(metrics).items() if v is not None}
        text = f"Step {metrics.step}/{metrics.total_steps}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in data.items() if k not in ("step", "total_steps")
        )
        with self.sessions() as session:
            add_event(session, self.job_id, text, data=data)
            job = session.get(JobRow, self.job_id)
            if job is not None and metrics.step > 0:
                job.heartbeat_at = utcnow()
                job.estimated_finish = _estimate(self.started, metrics)
            session.commit()

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        with self.sessions() as session:
            metrics = {k: v for k, v in asdict(checkpoint.metrics).items() if v is not None}
            session.add(
                CheckpointRow(
                    job_id=self.job_id,
                    step=checkpoint.step,
                    epoch=checkpoint.epoch,
                    path=str(checkpoint.path),
                    metrics=metrics,
                )
            )
            add_event(session, self.job_id, f"Checkpoint saved at step {checkpoint.step}")
            session.commit()

    def should_stop(self) -> bool:
        with self.sessions() as session:
            session.execute(update(JobRow).where(JobRow.id == self.job_id).values(heartbeat_at=utcnow()))
            session.commit()
            return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == self.job_id)))


def _estimate(started: datetime, metrics: Metrics) -> datetime:
    per_step = (utcnow() - started) / metrics.step
    return utcnow() + per_step * max(0, metrics.total_steps - metrics.step)


@dataclass(frozen=True)
class ResultFiles:
    """Where a succeeded job stores its Modelfile (a file with purpose ``fine-tune-results``), and the
    serving defaults the Modelfile carries."""

    files_dir: Path
    system: str = ""
    temperature: float = 0.3


def run_job(sessions: Sessions, job_id: str, worker: str, results: ResultFiles | None = None) -> None:
    """Run one job to its end. A job that is not ``queued`` (already taken, cancelled) is left alone."""
    from finetune.training import TrainingError, train

    with sessions() as session:
        if not claim(session, job_id, worker):
            log.info("job %s is not queued; nothing to do", job_id)
            return
        job = session.get(JobRow, job_id)
        assert job is not None
        stored = dict(job.config)
        distillation = stored.pop("distillation", None)
        config = TrainingConfig.model_validate(stored)
    observer = SqlObserver(sessions, job_id)
    try:
        if distillation is not None:
            run_teacher_phase(DistillationConfig.model_validate(distillation), config, observer)
            if results is not None:
                _store_training_file(sessions, job_id, config, results)
        result = train(config, observer)
    except TrainingStopped:
        _finish(sessions, job_id, "cancelled", message="Job cancelled")
    except TeacherError as exc:
        _finish(sessions, job_id, "failed", error=("teacher_error", str(exc)))
    except TrainingError as exc:
        _finish(sessions, job_id, "failed", error=("invalid_training_data", str(exc)))
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _finish(sessions, job_id, "failed", error=("training_failed", f"{type(exc).__name__}: {exc}"))
    else:
        _succeed(sessions, job_id, result.merged_dir, result.adapter_dir, result.trained_tokens, results)


def _store_training_file(
    sessions: Sessions, job_id: str, config: TrainingConfig, results: ResultFiles
) -> None:
    """The teacher's kept answers as a file (``GET /v1/files/{id}/content``), listed in ``result_files``."""
    data = config.training_file.read_bytes()
    examples = data.count(b"\n")
    with sessions() as session:
        job = session.get(JobRow, job_id)
        assert job is not None
        if job.result_files:  # a resumed job stored it before it was interrupted
            return
        row = store_file(
            session,
            results.files_dir,
            f"{job_id}-distilled.jsonl",
            "fine-tune",
            data,
            FileStats(examples, 0, 0),
        )
        job.result_files = [row.id]
        add_event(session, job_id, f"The teacher's answers are file {row.id} ({examples} conversations)")
        session.commit()


def _succeed(
    sessions: Sessions,
    job_id: str,
    merged: Path,
    adapter: Path,
    trained_tokens: int,
    results: ResultFiles | None,
) -> None:
    with sessions() as session:
        job = session.get(JobRow, job_id)
        assert job is not None
        name = model_name(job.model, job.suffix, job.id)
        session.add(
            TrainedModelRow(
                id=name, job_id=job.id, base_model=job.model, path=str(merged), adapter_path=str(adapter)
            )
        )
        job.fine_tuned_model, job.trained_tokens = name, trained_tokens
        modelfile = _modelfile(session, job_id, name, merged, results) if results else None
        if results and modelfile:
            stored = store_result_file(session, results.files_dir, "Modelfile", modelfile.encode())
            job.result_files = [*(job.result_files or []), stored.id]
        session.commit()
    _finish(sessions, job_id, "succeeded", message=f"Job succeeded: model {name} is served")


def _modelfile(session: Session, job_id: str, name: str, merged: Path, results: ResultFiles) -> str | None:
    """The trained model's Modelfile (``FROM`` its merged weights here), or None with a warning event."""
    portable = f"`assistant export ollama {name}` writes a portable folder"
    comment = f"# {name}\n# FROM is this server's copy of the weights; {portable}.\n"
    try:
        modelfile = for_model(
            str(merged), str(merged), system=results.system, temperature=results.temperature
        )
        return modelfile.text(comment=comment)
    except ModelfileError as exc:
        add_event(session, job_id, f"No Modelfile for Ollama: {exc}", "warn")
        return None


def _finish(
    sessions: Sessions,
    job_id: str,
    status: str,
    *,
    message: str | None = None,
    error: tuple[str, str] | None = None,
) -> None:
    with sessions() as session:
        job = session.get(JobRow, job_id)
        assert job is not None
        job.status, job.finished_at, job.estimated_finish = status, utcnow(), None
        if error is not None:
            job.error_code, job.error_message = error
            message = f"Job failed: {error[1]}"
        add_event(session, job_id, message or f"Job {status}", "error" if error else "info")
        session.commit()


def recover_lost_jobs(session: Session, *, max_attempts: int, stale_after: timedelta) -> list[str]:
    """Jobs whose worker is gone go back to the queue (or fail); returns the ids to enqueue again.

    A worker is gone when it ran on this host and its process no longer exists, or when it has not
    reported for ``stale_after``. Jobs still ``queued`` are returned too: their message may have been
    lost with the broker, and a duplicate is harmless (``claim`` runs a job once).
    """
    host, now = socket.gethostname(), utcnow()
    requeue: list[str] = []
    for job in session.scalars(select(JobRow).where(JobRow.status.in_(("running", "queued")))):
        if job.status == "running" and not _worker_lost(job, host, now, stale_after):
            continue
        if job.status == "running" and job.attempts >= max_attempts:
            job.status, job.finished_at = "failed", now
            job.error_code = "worker_lost"
            job.error_message = f"the worker running this job stopped {job.attempts} times; giving up"
            add_event(session, job.id, f"Job failed: {job.error_message}", "error")
            continue
        if job.status == "running":
            job.status, job.worker = "queued", None
            add_event(
                session,
                job.id,
                "The worker running this job was lost; the job resumes from its last checkpoint",
                "warn",
            )
        requeue.append(job.id)
    session.commit()
    return requeue


def _worker_lost(job: JobRow, host: str, now: datetime, stale_after: timedelta) -> bool:
    if job.heartbeat_at is None or _aware(job.heartbeat_at) < now - stale_after:
        return True
    worker_host, _, pid = (job.worker or "").rpartition(":")
    return worker_host == host and pid.isdigit() and not _process_exists(int(pid))


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
