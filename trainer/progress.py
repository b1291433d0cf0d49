"""A compact foreground progress line for training: steps, loss, reward accuracy, time left.

A transformers `TrainerCallback`; on a terminal it redraws one line, otherwise (logs, CI, the
service's job log) it prints a line every `every` steps and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from transformers import TrainerCallback


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class ProgressLine(TrainerCallback):
    def __init__(self, stream: IO[str] | None = None, every: int | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.started = 0.0
        self.loss: float | None = None
        self.accuracy: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        if self.every is None:
            self.every = max(1, state.max_steps // 10) if state.max_steps else 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        self.loss = logs["loss"]
        self.accuracy = logs.get("rewards/accuracies", self.accuracy)
        self._draw(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.tty and self.started:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, state) -> None:
        step, total = state.global_step, state.max_steps or 0
        if not self.tty and step % (self.every or 1) and step != total:
            return
        elapsed = time.monotonic() - self.started
        left = elapsed / step * (total - step) if step else 0.0
        width = 24
        filled = int(width * step / total) if total else 0
        parts = [f"train [{'#' * filled}{'.' * (width - filled)}] {step}/{total}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.accuracy is not None:
            parts.append(f"reward acc {self.accuracy:.2f}")
        parts.append(f"{_clock(elapsed)} elapsed, {_clock(left)} left")
        line = "  ".join(parts)
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
