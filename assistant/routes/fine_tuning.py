"""``/v1/fine_tuning/jobs``: OpenAI's Fine-tuning API over ``finetune.jobs``, admin keys only."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from assistant.auth import admin_only
from assistant.db import ApiKey
from assistant.errors import ApiError
from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from finetune import jobs
from finetune.config import DistillationLoss, Hyperparameters, OnPolicySampling
from finetune.distill import DistillationConfig, Mode, TeacherSettings, TeacherSpec, check_mode
from finetune.models import CheckpointRow, JobEventRow, JobRow
from finetune.white_box import UnusableTeacher, check_local_teacher
from finetune.worker import enqueue

log = logging.getLogger(__name__)

Limit = Annotated[int, QueryParameter(ge=1, le=100)]
After = Annotated[
    str | None, QueryParameter(description="Cursor: the id of the last item of the previous page.")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Supervised(_Strict):
    hyperparameters: Hyperparameters = Hyperparameters()


class Distillation(_Strict):
    """The teacher answers the prompt file; the student (``model``) learns from the answers (``black_box``)
    and, with a local teacher, from its token probabilities (``logits``, ``on_policy``)."""

    mode: Mode = "black_box"
    teacher: TeacherSpec
    generation: TeacherSettings = TeacherSettings()
    loss: DistillationLoss = DistillationLoss()
    on_policy: OnPolicySampling = OnPolicySampling()
    hyperparameters: Hyperparameters = Hyperparameters()

    @model_validator(mode="after")
    def _black_box_for_remote_teachers(self) -> Distillation:
        check_mode(self.mode, self.teacher)
        return self


class Method(_Strict):
    type: Literal["supervised", "distillation"]
    supervised: Supervised = Supervised()
    distillation: Distillation | None = None

    @model_validator(mode="after")
    def _distillation_given(self) -> Method:
        if self.type == "distillation" and self.distillation is None:
            raise ValueError("type 'distillation' needs a 'distillation' object (teacher, generation, ...)")
        return self


class JobCreate(_Strict):
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    method: Method | None = None
    #: OpenAI's older top-level form; ``method`` wins when both are given.
    hyperparameters: Hyperparameters | None = None
    metadata: dict[str, str] | None = None

    def chosen_hyperparameters(self) -> Hyperparameters:
        if self.method is not None and self.method.distillation is not None:
            return self.method.distillation.hyperparameters
        if self.method is not None:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


def _epoch(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def job_object(job: JobRow) -> dict[str, Any]:
    hyperparameters = job.method[job.method["type"]]["hyperparameters"]
    error = {"code": job.error_code, "message": job.error_message, "param": None} if job.error_code else None
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model,
        "created_at": _epoch(job.created_at),
        "finished_at": _epoch(job.finished_at),
        "estimated_finish": _epoch(job.estimated_finish),
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": "self-hosted",
        "result_files": job.result_files or [],
        "status": job.status,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "hyperparameters": {
            k: hyperparameters[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")
        },
        "method": job.method,
        "trained_tokens": job.trained_tokens,
        "error": error,
        "user_provided_suffix": job.suffix,
        "seed": job.seed,
        "integrations": [],
    }


def event_object(event: JobEventRow) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": jobs.event_id(event.id),
        "created_at": _epoch(event.created_at),
        "level": event.level,
        "message": event.message,
        "data": event.data or {},
        "type": event.type,
    }


def checkpoint_object(checkpoint: CheckpointRow, job: JobRow) -> dict[str, Any]:
    metrics = checkpoint.metrics
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.id,
        "created_at": _epoch(checkpoint.created_at),
        "fine_tuning_job_id": job.id,
        "fine_tuned_model_checkpoint": f"{jobs.model_name(job.model, job.suffix, job.id)}:ckpt-step-"
        f"{checkpoint.step}",
        "step_number": checkpoint.step,
        "metrics": {
            "step": checkpoint.step,
            "train_loss": metrics.get("train_loss"),
            "train_mean_token_accuracy": metrics.get("mean_token_accuracy"),
            "valid_loss": metrics.get("eval_loss"),
            "full_valid_loss": metrics.get("eval_loss"),
        },
    }


async def _distillation(
    body: JobCreate, settings: Settings, student: str, db_session: AsyncSession
) -> DistillationConfig | None:
    """The job's teacher and mode; a local teacher is resolved to what it loads from and checked."""
    if body.method is None or body.method.distillation is None:
        return None
    chosen = body.method.distillation
    teacher = chosen.teacher
    if teacher.kind == "local":
        path = await _local_model(teacher.model, settings, db_session)
        try:
            await asyncio.to_thread(
                check_local_teacher, student, path, shared_vocabulary=chosen.mode != "black_box"
            )
        except UnusableTeacher as exc:
            raise ApiError(400, str(exc), param="method.distillation.teacher.model", code=exc.code) from exc
        teacher = teacher.model_copy(update={"path": path})
    return DistillationConfig(
        mode=chosen.mode,
        teacher=teacher,
        generation=chosen.generation,
        loss=chosen.loss,
        on_policy=chosen.on_policy,
        policy_file=settings.safety.policy_file,
    )


async def _local_model(name: str, settings: Settings, db_session: AsyncSession) -> str:
    """What a local model loads from: a model this service serves by name, else the name itself (a
    directory or hub id)."""
    if name == settings.model.name:
        return await asyncio.to_thread(resolve_model_dir, settings.model.path, settings.cache_dir)
    trained = await db_session.run_sync(lambda session: jobs.find_model(session, name))
    return trained.path if trained is not None else name


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more}


def _parse(body: dict[str, Any]) -> JobCreate:
    """Validate here rather than in the schema layer: OpenAI answers bad fields with a 400 naming them."""
    try:
        return JobCreate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ApiError(400, f"{field}: {message}", param=field, code="invalid_value") from exc


class FineTuningController(Controller):
    path = "/v1/fine_tuning/jobs"
    guards = [admin_only]  # noqa: RUF012 - Litestar's declared attribute

    @post("/", status_code=200, summary="Create a supervised (QLoRA) fine-tuning or a distillation job")
    async def create(
        self,
        data: JSONBody[dict[str, Any]],
        db_session: NamedDependency[AsyncSession],
        state: State,
        request: Request[ApiKey, str, State],
    ) -> dict[str, Any]:
        settings: Settings = state.settings
        body = _parse(data)
        if body.model != settings.model.name:
            raise ApiError(
                400,
                f"model {body.model!r} cannot be fine-tuned here; base models: {settings.model.name}",
                param="model",
                code="model_not_available",
            )
        base_path = await asyncio.to_thread(resolve_model_dir, settings.model.path, settings.cache_dir)
        job_request = jobs.JobRequest(
            model=body.model,
            base_model_path=base_path,
            training_file=body.training_file,
            validation_file=body.validation_file,
            suffix=body.suffix,
            seed=body.seed if body.seed is not None else 42,
            hyperparameters=body.chosen_hyperparameters(),
            created_by=request.user.name,
            distillation=await _distillation(body, settings, base_path, db_session),
        )
        job = await db_session.run_sync(
            lambda s: jobs.create_job(
                s, job_request, files_dir=settings.files_dir, jobs_dir=settings.jobs_dir
            )
        )
        try:
            await asyncio.to_thread(enqueue, state.celery, job.id)
        except Exception as exc:  # the job is safe in SQL: a starting worker enqueues queued jobs again
            log.error("could not hand job %s to the broker: %s", job.id, exc)
            await db_session.run_sync(
                lambda s: jobs.note(
                    s, job.id, "The broker was unreachable; a worker picks the job up when it starts", "warn"
                )
            )
        return job_object(job)

    @get("/", summary="Fine-tuning jobs, newest first")
    async def list_jobs(
        self, db_session: NamedDependency[AsyncSession], limit: Limit = 20, after: After = None
    ) -> dict[str, Any]:
        rows, more = await db_session.run_sync(jobs.list_jobs, limit, after)
        return page([job_object(j) for j in rows], more)

    @get("/{job_id:str}", summary="One fine-tuning job")
    async def retrieve(
        self, job_id: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> dict[str, Any]:
        return job_object(await db_session.run_sync(jobs.get_job, job_id))

    @get("/{job_id:str}/events", summary="A job's events, newest first (steps, losses, messages)")
    async def events(
        self,
        job_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        limit: Limit = 20,
        after: After = None,
    ) -> dict[str, Any]:
        rows, more = await db_session.run_sync(jobs.list_events, job_id, limit, after)
        return page([event_object(e) for e in rows], more)

    @get("/{job_id:str}/checkpoints", summary="A job's checkpoints, newest first")
    async def checkpoints(
        self,
        job_id: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        limit: Limit = 10,
        after: After = None,
    ) -> dict[str, Any]:
        job = await db_session.run_sync(jobs.get_job, job_id)
        rows, more = await db_session.run_sync(jobs.list_checkpoints, job_id, limit, after)
        return page([checkpoint_object(c, job) for c in rows], more)

    @post(
        "/{job_id:str}/cancel", status_code=200, summary="Cancel a job (a running one stops after its step)"
    )
    async def cancel(
        self, job_id: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> dict[str, Any]:
        return job_object(await db_session.run_sync(jobs.request_cancel, job_id))
