"""Data sets: CIFAR-10/100 (torchvision or the offline JPEG tree) and a synthetic task."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from igat.config import DataConfig
from igat.data.cifar import DataNotFoundError, RawSplits, candidate_dirs, load_cifar
from igat.data.loader import TensorLoader, random_crop_flip
from igat.data.synthetic import make_synthetic
from igat.models.resnet import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD


@dataclass
class Dataset:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def test_tensors(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """n equidistant test examples (the paper's CW protocol), as float [0,1]; all when n is None."""
        idx = equidistant_indices(len(self.test_x), n)
        return self.test_x[idx].float() / 255.0, self.test_y[idx]


def equidistant_indices(total: int, n: int | None) -> Tensor:
    if n is None or n >= total:
        return torch.arange(total)
    # floor(i * total / n): spread over the whole range (the paper's 0, 10, ..., 9990 for 1,000 of
    # 10,000), so on class-sorted data every class gets its share even when n does not divide total
    return (torch.arange(n) * total) // n


def load_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    if cfg.dataset == "synthetic":
        tx, ty, vx, vy = make_synthetic(
            cfg.synthetic_train_size, cfg.synthetic_test_size, cfg.synthetic_classes, cfg.synthetic_image_size, seed
        )
        ds = Dataset(tx, ty, vx, vy, cfg.synthetic_classes, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "synthetic")
    else:
        raw: RawSplits = load_cifar(cfg.dataset, cfg.root, cfg.download)
        mean, std = (CIFAR10_MEAN, CIFAR10_STD) if cfg.dataset == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
        ds = Dataset(raw.train_x, raw.train_y, raw.test_x, raw.test_y, cfg.num_classes, mean, std, raw.source)
    if cfg.train_subset:
        # equidistant, not the first n: the ImageFolder source is sorted by class, so a prefix
        # would hold only the first class(es); every k-th example keeps the classes balanced
        idx = equidistant_indices(len(ds.train_x), cfg.train_subset)
        ds.train_x, ds.train_y = ds.train_x[idx], ds.train_y[idx]
    if cfg.test_subset:
        idx = equidistant_indices(len(ds.test_x), cfg.test_subset)
        ds.test_x, ds.test_y = ds.test_x[idx], ds.test_y[idx]
    return ds


__all__ = [
    "DataConfig",
    "DataNotFoundError",
    "Dataset",
    "TensorLoader",
    "candidate_dirs",
    "equidistant_indices",
    "load_cifar",
    "load_dataset",
    "make_synthetic",
    "random_crop_flip",
]
