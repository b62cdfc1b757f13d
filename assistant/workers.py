"""The fine-tuning worker as the service runs it: its Celery configuration and the embedded process."""

from __future__ import annotations

import logging
import subprocess
import sys

from assistant.chat import system_instruction
from assistant.settings import Settings
from finetune.runner import ResultFiles
from finetune.worker import WorkerConfig

log = logging.getLogger(__name__)


def worker_config(settings: Settings) -> WorkerConfig:
    tuning = settings.finetune
    return WorkerConfig(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        database_url=settings.database_url,
        visibility_timeout=tuning.visibility_timeout,
        max_attempts=tuning.max_attempts,
        stale_after=tuning.stale_after,
        results=ResultFiles(
            files_dir=settings.files_dir,
            system=system_instruction(settings.chat.system_prompt, settings.chat.default_style, {}),
            temperature=settings.chat.default_temperature,
        ),
    )


def start_embedded_worker() -> subprocess.Popen[bytes]:
    """``assistant worker`` as a child process with this process's environment (so the same settings)."""
    log.info("starting the embedded fine-tuning worker")
    return subprocess.Popen([sys.executable, "-m", "assistant", "worker"])


def stop_worker(worker: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if worker.poll() is not None:
        return
    log.info("stopping the embedded fine-tuning worker")
    worker.terminate()  # Celery's warm shutdown: the running training step ends, the job is resumed later
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
