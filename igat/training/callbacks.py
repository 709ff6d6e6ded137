"""Training events. The trainer calls these; the platform's DB writer and the CLI's progress
bar are callbacks. ``should_stop`` is polled every batch (cooperative cancel)."""

from __future__ import annotations

from typing import Any

from igat.defenses.base import MemberStat


class Callback:
    def on_run_start(self, info: dict[str, Any]) -> None:
        """info: config, device, steps_per_epoch, start_epoch (> 0 when resuming), dataset source."""

    def on_step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        """Emitted every ``train.log_every`` steps; ``step`` is the global step (1-based)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], member_stats: list[MemberStat]) -> None:
        """``epoch`` is 1-based: the number of completed epochs."""

    def on_checkpoint(self, epoch: int, path: str) -> None:
        pass

    def on_run_end(self, summary: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self.callbacks = list(callbacks or [])

    def on_run_start(self, info):
        for c in self.callbacks:
            c.on_run_start(info)

    def on_step(self, epoch, step, metrics):
        for c in self.callbacks:
            c.on_step(epoch, step, metrics)

    def on_epoch_end(self, epoch, metrics, member_stats):
        for c in self.callbacks:
            c.on_epoch_end(epoch, metrics, member_stats)

    def on_checkpoint(self, epoch, path):
        for c in self.callbacks:
            c.on_checkpoint(epoch, path)

    def on_run_end(self, summary):
        for c in self.callbacks:
            c.on_run_end(summary)

    def should_stop(self) -> bool:
        return any(c.should_stop() for c in self.callbacks)


class HistoryCallback(Callback):
    """Keeps every emitted metric in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, dict[str, float]]] = []
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.member_stats: list[tuple[int, MemberStat]] = []

    def on_step(self, epoch, step, metrics):
        self.steps.append((epoch, step, dict(metrics)))

    def on_epoch_end(self, epoch, metrics, member_stats):
        self.epochs.append((epoch, dict(metrics)))
        self.member_stats.extend((epoch, s) for s in member_stats)
