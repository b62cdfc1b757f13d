"""What a training run reports while it runs, and how it is asked to stop.

``train`` calls an observer; the job service's observer writes rows to SQL and reads the job's
cancel flag, the CLI's draws a progress bar. Training code knows neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True)
class Metrics:
    """One logging step of training (``eval_loss`` on the steps that evaluated)."""

    step: int
    total_steps: int
    epoch: float
    train_loss: float | None = None
    eval_loss: float | None = None
    mean_token_accuracy: float | None = None
    tokens_per_second: float | None = None
    learning_rate: float | None = None
    #: White-box distillation: the two terms of the training loss (``finetune.white_box``).
    ce_loss: float | None = None
    kd_loss: float | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A saved training state that a restarted run can resume from."""

    step: int
    epoch: float
    path: Path
    metrics: Metrics


Level = Literal["info", "warn", "error"]


class TrainingObserver(Protocol):
    def message(self, text: str, level: Level = "info") -> None: ...
    def metrics(self, metrics: Metrics) -> None: ...
    def checkpoint(self, checkpoint: Checkpoint) -> None: ...
    def should_stop(self) -> bool:
        """Asked every step; True ends training cleanly after that step (cooperative cancel)."""
        ...


class TrainingStopped(Exception):
    """Training ended early because the observer asked it to."""
