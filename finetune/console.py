"""A terminal observer for ``assistant finetune run``: a progress bar, messages above it, Ctrl-C to stop.

The first Ctrl-C (SIGINT) asks training to stop cleanly after the current step (``train`` then raises
``TrainingStopped``); a second one interrupts at once (``KeyboardInterrupt``). The handler is installed
when the observer is made in the main thread and put back by ``close()`` (or leaving a ``with`` block).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, TextIO

from tqdm import tqdm

from finetune.progress import Checkpoint, Level, Metrics


class ConsoleObserver:
    """Draws training progress with tqdm; ``should_stop`` is True only once Ctrl-C was pressed."""

    def __init__(self, file: TextIO | None = None, *, handle_interrupt: bool = True) -> None:
        self.file = file or sys.stderr
        self.interrupted = False
        self._bar: Any = None
        self._previous_handler: Any = None
        if handle_interrupt and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)

    def message(self, text: str, level: Level = "info") -> None:
        prefix = "" if level == "info" else f"{level}: "
        tqdm.write(prefix + text, file=self.file)

    def metrics(self, metrics: Metrics) -> None:
        bar = self._progress_bar(metrics)
        bar.update(max(0, metrics.step - bar.n))
        if metrics.train_loss is not None:
            bar.set_postfix(_postfix(metrics), refresh=False)
        elif metrics.eval_loss is not None:
            self.message(f"epoch {metrics.epoch:.0f}: eval loss {metrics.eval_loss:.4f}")
        bar.refresh()

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        self.message(f"checkpoint at step {checkpoint.step}: {checkpoint.path}")

    def should_stop(self) -> bool:
        return self.interrupted

    def interrupt(self) -> None:
        """Ask training to stop after the current step (what Ctrl-C does)."""
        if not self.interrupted:
            self.interrupted = True
            self.message("stopping after this step (Ctrl-C again to abort now)", "warn")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def __enter__(self) -> ConsoleObserver:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _progress_bar(self, metrics: Metrics) -> Any:
        if self._bar is None:  # a resumed run starts part-way; its rate counts from there
            start = max(0, metrics.step - 1)
            self._bar = tqdm(
                total=metrics.total_steps, initial=start, unit="step", file=self.file, dynamic_ncols=True
            )
        return self._bar

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupt()


def _postfix(metrics: Metrics) -> dict[str, str]:
    postfix = {"loss": f"{metrics.train_loss:.4f}"}
    if metrics.tokens_per_second is not None:
        postfix["tok/s"] = f"{metrics.tokens_per_second:.0f}"
    return postfix
