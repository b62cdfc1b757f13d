"""Helpers for the fine-tuning tests: a real worker process, job polling, a small domain file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from assistant.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_FILE = ROOT / "bench" / "finetune_data" / "train.jsonl"
#: A few steps of real QLoRA: 12 domain examples (one held out), batch 4, a high learning rate.
QUICK = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 5, "lora_r": 8, "lora_alpha": 16}


def domain_examples(count: int = 12) -> bytes:
    return ("\n".join(DOMAIN_FILE.read_text().splitlines()[:count]) + "\n").encode()


def supervised(**hyperparameters: Any) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": {**QUICK, **hyperparameters}}}


class Worker:
    """``assistant worker`` in its own process, configured like the server it serves."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "ASSISTANT_DATA_DIR": str(s.data_dir),
            "ASSISTANT_DATABASE__URL": s.database_url,
            "ASSISTANT_FINETUNE__BROKER_URL": s.broker_url,
            "ASSISTANT_FINETUNE__RESULT_BACKEND": s.result_backend,
            "ASSISTANT_LOG_LEVEL": "INFO",
        }

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "assistant", "worker"],
                env=self.env(),
                stdout=out,
                stderr=out,
                cwd=ROOT,
            )
        return self

    def kill(self) -> None:
        """SIGKILL, as an OOM killer or a lost machine would; reaped so its pid is really gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_for(
    http: httpx.Client, job_id: str, done: Any, worker: Worker | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Poll the job until ``done(job)``; fails with the worker's log tail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if done(job):
            return job
        if time.monotonic() > deadline:
            log = worker.output() if worker else ""
            raise AssertionError(f"job never reached the expected state: {job}\n{log}")
        time.sleep(0.3)


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def events(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = http.get(
        f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}
    ).json()["data"]
    return data
