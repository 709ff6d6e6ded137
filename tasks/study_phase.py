"""The metric writer of one trained phase of a study (imported by the worker only: it needs PyTorch's side of
the library, which checking and planning a study must not load)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.callbacks import DBCallback, truncate_after

if TYPE_CHECKING:
    from tasks.studyjob import StudyTracker


class PhaseCallback(DBCallback):
    """A train job's metric writer for one phase of a study, which also reports the study's progress and
    stops when the study is cancelled or taken over."""

    def __init__(self, tracker: StudyTracker, label: str, run_id: int, total_epochs: int) -> None:
        s = tracker.ctx.settings
        super().__init__(tracker.engine, run_id, tracker.attempt, total_epochs, flush_rows=s.flush_rows,
                         flush_seconds=s.flush_seconds, cancel_poll_seconds=s.cancel_poll_seconds)
        self.tracker, self.label = tracker, label
        self.per_epoch_call = label.endswith("/base")  # the epoch is already in the phase text

    def _note(self, epoch: int) -> str:
        return "" if self.per_epoch_call else f"epoch {min(epoch, self.total_epochs)}/{self.total_epochs}"

    def on_run_start(self, info: dict[str, Any]) -> None:
        # The points a previous attempt wrote after the checkpoint this fit resumes from are written again.
        start = int(info.get("start_epoch") or 0)
        steps = max(int(info.get("steps_per_epoch") or 1), 1)
        truncate_after(self.engine, self.run_id, start, start * steps)
        super().on_run_start(info)
        self.tracker.training(self.label, float(start), self._note(start + 1), force=True)

    def on_step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        super().on_step(epoch, step, metrics)
        within = min(max((step - (epoch - 1) * self.steps_per_epoch) / self.steps_per_epoch, 0.0), 1.0)
        self.tracker.training(self.label, epoch - 1 + within, self._note(epoch))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], member_stats) -> None:
        super().on_epoch_end(epoch, metrics, member_stats)
        self.tracker.training(self.label, float(epoch), self._note(epoch + 1), force=True)

    def should_stop(self) -> bool:
        if super().should_stop() or self.tracker.study_stop():
            self._stop = True
        return self._stop
