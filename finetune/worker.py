"""The Celery app that runs fine-tuning jobs. Tasks are thin: a job id in, ``runner.run_job`` called.

Broker and result backend are settings. The embedded default is SQLite through Celery's SQLAlchemy
transport (polling, no revoke: cancellation goes through the job row). In production use Redis with
``visibility_timeout`` above the longest job, one worker process per GPU (``--concurrency 1``).
Either way tasks are acknowledged late and prefetched one at a time, and a starting worker puts the
jobs of a lost worker back in the queue (``runner.recover_lost_jobs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from finetune import runner

RUN_JOB = "finetune.run_job"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    broker_url: str
    result_backend: str
    database_url: str  # synchronous SQLAlchemy URL of the service's database
    visibility_timeout: int = 24 * 3600
    max_attempts: int = 3
    stale_after: int = 600
    #: Where succeeded jobs store their Modelfile, and the defaults it carries (None: no Modelfile).
    results: runner.ResultFiles | None = None


def create_celery(config: WorkerConfig) -> Celery:
    app = Celery("finetune", broker=config.broker_url, backend=config.result_backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    if not config.broker_url.startswith("sqla+"):  # the SQLAlchemy transport hands its options to the engine
        app.conf.broker_transport_options = {"visibility_timeout": config.visibility_timeout}

    @app.task(name=RUN_JOB)  # type: ignore[untyped-decorator]
    def run_job(job_id: str) -> None:
        runner.run_job(_sessions(config.database_url), job_id, runner.worker_name(), config.results)

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def recover(sender: Any, **_: Any) -> None:
        if sender.app is not app:
            return
        with _sessions(config.database_url)() as session:
            lost = runner.recover_lost_jobs(
                session, max_attempts=config.max_attempts, stale_after=timedelta(seconds=config.stale_after)
            )
        for job_id in lost:
            log.info("job %s goes back to the queue", job_id)
            enqueue(app, job_id)

    return app


@cache
def _sessions(database_url: str) -> sessionmaker[Session]:
    return sessionmaker(create_engine(database_url), expire_on_commit=False)


def enqueue(app: Celery, job_id: str) -> None:
    app.send_task(RUN_JOB, args=[job_id])


def run_worker(app: Celery, *, loglevel: str = "INFO") -> None:
    """One worker process, one job at a time, training in the worker's own process (``solo`` pool)."""
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            "-n",
            "finetune@%h",
        ]
    )
