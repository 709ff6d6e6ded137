"""The training progress bar of ``igat train`` (a training callback: imported only when something trains, so the
other commands start without PyTorch)."""

from __future__ import annotations

import sys

from igat.training.callbacks import Callback


class ProgressBar(Callback):
    """A tqdm bar per epoch, with the latest loss and the epoch's test probe."""

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = total_epochs
        self.bar = None
        self.steps_per_epoch = 0

    def on_run_start(self, info):
        self.steps_per_epoch = info["steps_per_epoch"]
        src = info.get("data_source", "")
        resumed = f", resuming after epoch {info['start_epoch']}" if info["start_epoch"] else ""
        print(f"training on {info['device']} ({src}){resumed}; checkpoints in {info['output_dir']}", file=sys.stderr)
        self._bar(info["start_epoch"] + 1)  # started now, so its rate counts the steps before the first log

    def _bar(self, epoch: int):
        from tqdm import tqdm

        if self.bar is None or self.bar.desc != f"epoch {epoch}/{self.total_epochs}":
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.total_epochs}", file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        return self.bar

    def on_step(self, epoch, step, metrics):
        bar = self._bar(epoch)
        done = (step - 1) % max(self.steps_per_epoch, 1) + 1
        bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}", refresh=False)
        bar.update(max(done - bar.n, 0))  # update(), not n = ...: tqdm's rate and ETA need the increments

    def on_epoch_end(self, epoch, metrics, member_stats):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        probe = ", ".join(f"{k[5:]}={v:.3f}" for k, v in metrics.items() if k.startswith("test_") and "member_" not in k)
        print(f"epoch {epoch}/{self.total_epochs}: loss={metrics.get('train_loss', float('nan')):.4f} "
              f"{probe} ({metrics['epoch_seconds']:.1f}s)", file=sys.stderr)
        if epoch < self.total_epochs:
            self._bar(epoch + 1)
