"""Build the pieces of a run from the config: device, ensemble, optimisers, schedulers."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from igat.config import ExperimentConfig
from igat.data import Dataset
from igat.defenses.base import Defense
from igat.models.ensemble import Ensemble


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_channels_last(setting: bool | str, device: torch.device | str | None) -> bool:
    if setting == "auto":
        return device is None or torch.device(device).type == "cpu"
    return bool(setting)


def build_ensemble(config: ExperimentConfig, dataset: Dataset | None, defense: Defense | None = None,
                   device: torch.device | str | None = None) -> Ensemble:
    num_classes = dataset.num_classes if dataset else config.data.num_classes
    kwargs = dict(
        num_classes=num_classes,
        activation=config.model.activation,
        leaky_slope=config.model.leaky_slope,
        depth=config.model.depth,
        width=config.model.width,
    )
    if dataset is not None:
        kwargs.update(mean=dataset.mean, std=dataset.std)
    else:
        from igat.models.resnet import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD

        mean, std = {
            "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
            "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
        }.get(config.data.dataset, ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
        kwargs.update(mean=mean, std=std)
    if defense is not None:
        kwargs.update(defense.member_kwargs())
    channels_last = resolve_channels_last(config.model.channels_last, device)
    return Ensemble.resnet20(config.model.num_members, channels_last=channels_last, fold_bn=config.model.fold_bn,
                             **kwargs)


def build_optimizers(config: ExperimentConfig, ensemble: Ensemble, extra: nn.ModuleDict) -> list[torch.optim.Optimizer]:
    oc = config.optim

    def make(params) -> torch.optim.Optimizer:
        params = list(params)
        if oc.name == "sgd":
            return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay, nesterov=oc.nesterov)
        return torch.optim.Adam(params, lr=oc.lr, weight_decay=oc.weight_decay, eps=oc.adam_eps)

    if oc.per_member:
        opts = [make(m.parameters()) for m in ensemble.members]
        if len(list(extra.parameters())):
            opts.append(make(extra.parameters()))
        return opts
    return [make(list(ensemble.parameters()) + list(extra.parameters()))]


def build_schedulers(config: ExperimentConfig, optimizers: list[torch.optim.Optimizer]) -> list:
    return [
        torch.optim.lr_scheduler.MultiStepLR(opt, milestones=config.optim.milestones, gamma=config.optim.gamma)
        for opt in optimizers
    ]
