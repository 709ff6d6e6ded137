"""The training loop: epochs of defense steps, per-epoch probes, checkpoints, exact resume.

Resume is exact: a checkpoint written at the end of epoch e holds the weights, optimiser and
scheduler states, every RNG (python, numpy, torch, the data loader's and the attack generator)
and the defense's own state, so continuing from it reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igat.attacks.pgd import pgd
from igat.config import ExperimentConfig
from igat.data import Dataset, TensorLoader, load_dataset
from igat.defenses import build_defense
from igat.defenses.base import MemberStat
from igat.models.ensemble import Ensemble
from igat.training.builders import build_ensemble, build_optimizers, build_schedulers, resolve_device, seed_everything
from igat.training.callbacks import Callback, CallbackList
from igat.training.checkpoint import (
    LAST,
    CheckpointError,
    binding_for,
    check_binding,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from igat.training.context import NonFiniteLossError, StepContext


class TrainingCancelled(RuntimeError):
    """Raised when a callback asked the run to stop; the last checkpoint is kept."""


@dataclass
class TrainResult:
    epochs_completed: int
    checkpoint: str
    final_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def default_output_dir(config: ExperimentConfig) -> Path:
    return Path(config.output_dir or Path("runs") / f"{config.name}-seed{config.seed}")


@torch.no_grad()
def _accuracy(model, x, y, batch_size: int = 512) -> float:
    correct = 0
    for s in range(0, len(x), batch_size):
        correct += int((model(x[s : s + batch_size]).argmax(1) == y[s : s + batch_size]).sum())
    return correct / max(len(x), 1)


def probe_metrics(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, pgd_steps: int, seed: int) -> dict[str, float]:
    """Per-epoch test probe: natural and PGD accuracy of the average/max ensembles and members."""
    metrics: dict[str, float] = {}
    gen = torch.Generator().manual_seed(seed)
    with ensemble.frozen(eval_mode=True):
        for comb in ("average", "max"):
            model = ensemble.as_model(comb)
            metrics[f"test_nat_acc_{comb}"] = _accuracy(model, x, y)
            if pgd_steps > 0:
                x_adv = pgd(model, x, y, steps=pgd_steps, generator=gen)
                metrics[f"test_pgd_acc_{comb}"] = _accuracy(model, x_adv, y)
        member_acc = [_accuracy(m, x, y) for m in ensemble.active_members]
    metrics["test_nat_acc_member_mean"] = sum(member_acc) / len(member_acc)
    for i, a in enumerate(member_acc):
        metrics[f"test_nat_acc_member_{i}"] = a
    return metrics


class Trainer:
    def __init__(
        self,
        config: ExperimentConfig,
        callbacks: list[Callback] | None = None,
        output_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        dataset: Dataset | None = None,
        resume: bool = True,
        run_key: str | None = None,
    ) -> None:
        """``run_key`` names the run that owns ``output_dir`` (``None``: a command-line run). A checkpoint
        there is resumed only if this run (key and training config) wrote it; otherwise
        :class:`~igat.training.checkpoint.CheckpointMismatchError` is raised before any work."""
        self.config = config
        self.run_key = run_key
        self.callbacks = CallbackList(callbacks)
        self.output_dir = Path(output_dir) if output_dir else default_output_dir(config)
        self.device = torch.device(device) if isinstance(device, torch.device) else resolve_device(device or config.device)
        self.resume = resume
        seed_everything(config.seed)
        self.dataset = dataset if dataset is not None else load_dataset(config.data, config.seed)
        self.defense = build_defense(config)
        self.ensemble = build_ensemble(config, self.dataset, self.defense, self.device).to(self.device)
        self.extra = nn.ModuleDict(self.defense.extra_modules(self.dataset.num_classes)).to(self.device)
        self.optimizers = build_optimizers(config, self.ensemble, self.extra)
        self.schedulers = build_schedulers(config, self.optimizers)
        tc = config.train
        self.loader = TensorLoader(
            self.dataset.train_x, self.dataset.train_y, tc.batch_size, shuffle=True,
            augment=config.data.augment, noise_std=config.data.noise_std, drop_last=len(self.dataset.train_x) > tc.batch_size,
            seed=config.seed, device=self.device, max_batches=tc.steps_per_epoch,
        )
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.generator = torch.Generator(device=gen_device).manual_seed(config.seed + 1)
        self.ctx = StepContext(
            ensemble=self.ensemble, config=config, device=self.device, optimizers=self.optimizers,
            extra=self.extra, generator=self.generator, dataset=self.dataset,
            steps_per_epoch=len(self.loader), grad_clip=tc.grad_clip,
        )
        self.start_epoch = 0
        self.last_metrics: dict[str, float] = {}
        last = self.output_dir / LAST
        if resume and last.exists():
            ckpt = load_checkpoint(last, self.device)
            check_binding(ckpt, last, config.to_dict(), run_key)
            self._restore(ckpt)
        elif config.train.init_checkpoint:
            self.load_weights(config.train.init_checkpoint)

    # --- checkpoints --------------------------------------------------------------------
    def load_weights(self, path: str | Path) -> None:
        """Warm start: members (and jointly trained modules) from another checkpoint's weights only.

        Optimiser, schedule, RNG and epoch counter start fresh: the run is a new run that begins at
        those weights (an iGAT fine-tune of a baseline, DVERGE from a standard-trained ensemble)."""
        ckpt = load_checkpoint(path, self.device)
        members = ckpt.get("members")
        if not isinstance(members, list) or len(members) != self.ensemble.num_members:
            have = len(members) if isinstance(members, list) else "no"
            raise CheckpointError(
                f"train.init_checkpoint {path} has {have} members but model.num_members is {self.ensemble.num_members}"
            )
        try:
            self.ensemble.load_member_state_dicts(members)
            for name, state in ckpt.get("extra", {}).items():
                if name in self.extra:
                    self.extra[name].load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as exc:
            src = ckpt.get("config", {}).get("model", {}) if isinstance(ckpt.get("config"), dict) else {}
            raise CheckpointError(
                f"train.init_checkpoint {path} does not fit this model (its model: {src}); "
                f"{str(exc).splitlines()[0]}") from None

    def _payload(self, epoch: int) -> dict[str, Any]:
        config = self.config.to_dict()
        return {
            "config": config,
            "binding": binding_for(config, self.run_key),
            "epoch": epoch,
            "global_step": self.ctx.step,
            "members": self.ensemble.member_state_dicts(),
            "extra": {k: m.state_dict() for k, m in self.extra.items()},
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng": {**rng_state(), "loader": self.loader.state_dict(), "attack": self.generator.get_state()},
            "defense": self.defense.state_dict(),
            "metrics": self.last_metrics,
        }

    def save(self, epoch: int) -> Path:
        path = save_checkpoint(self.output_dir / LAST, self._payload(epoch))
        self.callbacks.on_checkpoint(epoch, str(path))
        return path

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.ensemble.load_member_state_dicts(ckpt["members"])
        for name, state in ckpt.get("extra", {}).items():
            self.extra[name].load_state_dict(state)
        for o, s in zip(self.optimizers, ckpt["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, ckpt["schedulers"], strict=True):
            sch.load_state_dict(s)
        rng = ckpt["rng"]
        set_rng_state(rng)
        self.loader.load_state_dict(rng["loader"])
        self.generator.set_state(rng["attack"].to("cpu") if hasattr(rng["attack"], "to") else rng["attack"])
        self.defense.load_state_dict(ckpt.get("defense", {}))
        self.start_epoch = int(ckpt["epoch"])
        self.ctx.step = int(ckpt["global_step"])
        self.last_metrics = dict(ckpt.get("metrics", {}))

    # --- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.config
        started = time.time()
        probe_x, probe_y = self.dataset.test_tensors(cfg.train.eval_examples or None)
        probe_x, probe_y = probe_x.to(self.device), probe_y.to(self.device)
        self.callbacks.on_run_start({
            "config": cfg.to_dict(), "device": str(self.device), "steps_per_epoch": len(self.loader),
            "start_epoch": self.start_epoch, "data_source": self.dataset.source,
            "output_dir": str(self.output_dir),
        })
        ckpt_path = self.output_dir / LAST
        log_every = step_log_interval(cfg.train.log_every, cfg.train.epochs * len(self.loader))
        for epoch in range(self.start_epoch, cfg.train.epochs):
            self.ctx.epoch = epoch
            self.ensemble.train()
            self.extra.train()
            self.defense.on_epoch_start(self.ctx)
            sums: dict[str, float] = defaultdict(float)
            count = 0
            t0 = time.time()
            for x, y in self.loader:
                if self.callbacks.should_stop():
                    raise TrainingCancelled(f"cancelled during epoch {epoch + 1} at step {self.ctx.step}")
                self.ctx.step += 1
                metrics = self.defense.train_step(self.ctx, x, y)
                for k, v in metrics.items():
                    if isinstance(v, float) and not math.isfinite(v):
                        raise NonFiniteLossError(
                            f"metric {k} became {v} at epoch {epoch + 1}, step {self.ctx.step}; the run was stopped"
                        )
                    sums[k] += float(v)
                count += 1
                if self.ctx.step % log_every == 0:
                    self.callbacks.on_step(epoch + 1, self.ctx.step, {**metrics, "lr": self.optimizers[0].param_groups[0]["lr"]})
            for sch in self.schedulers:
                sch.step()
            epoch_metrics = {f"train_{k}": v / max(count, 1) for k, v in sums.items()}
            epoch_metrics["epoch_seconds"] = time.time() - t0
            epoch_metrics["images_per_second"] = count * cfg.train.batch_size / max(epoch_metrics["epoch_seconds"], 1e-9)
            epoch_metrics["lr"] = self.optimizers[0].param_groups[0]["lr"]
            if cfg.train.eval_examples:
                epoch_metrics.update(probe_metrics(self.ensemble, probe_x, probe_y, cfg.train.eval_pgd_steps, cfg.seed))
            member_stats: list[MemberStat] = self.defense.epoch_member_stats()
            self.last_metrics = epoch_metrics
            self.callbacks.on_epoch_end(epoch + 1, epoch_metrics, member_stats)
            if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.train.epochs:
                ckpt_path = self.save(epoch + 1)
        result = TrainResult(cfg.train.epochs, str(ckpt_path), self.last_metrics, time.time() - started)
        self.callbacks.on_run_end({"epochs": result.epochs_completed, "checkpoint": result.checkpoint,
                                   "metrics": result.final_metrics, "seconds": result.seconds})
        return result


# A run's loss curves get at least this many points: a short run logs more often than train.log_every.
MIN_STEP_POINTS = 100


def step_log_interval(log_every: int, total_steps: int) -> int:
    """Steps between step-metric emissions: ``train.log_every``, lowered for a short run so its curves have at
    least ``MIN_STEP_POINTS`` points (a 1-epoch run of 40 steps at log_every 10 would draw 4; every step then)."""
    return max(1, min(log_every, total_steps // MIN_STEP_POINTS))


def train(config: ExperimentConfig, callbacks: list[Callback] | None = None, **kwargs) -> TrainResult:
    return Trainer(config, callbacks, **kwargs).fit()


def load_ensemble(path: str | Path, device: str | torch.device = "cpu") -> tuple[Ensemble, ExperimentConfig, dict[str, Any]]:
    """Rebuild the trained ensemble (and its config) from a checkpoint for evaluation."""
    ckpt = load_checkpoint(path, device)
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("members"), list):
        raise CheckpointError(f"{path} lacks the config or the member weights of an iGAT Lab checkpoint")
    try:
        config = ExperimentConfig.from_dict(ckpt["config"])
    except ValueError as exc:
        raise CheckpointError(f"{path} holds an invalid config: {exc}") from None
    defense = build_defense(config)
    # No dataset needed: build_ensemble takes the normalisation constants from the config's data set.
    ensemble = build_ensemble(config, None, defense, device).to(device)
    try:
        ensemble.load_member_state_dicts(ckpt["members"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: the member weights do not fit its config: {str(exc).splitlines()[0]}") from None
    ensemble.eval()
    return ensemble, config, ckpt
