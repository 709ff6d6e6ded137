"""A seeded, CIFAR-shaped synthetic classification task for tests and demos.

Each class has a smooth random prototype pattern (low-frequency colour blobs); an example is
its class prototype at a random contrast plus pixel noise, in [0, 1]. Separable enough that a
ResNet-20 learns it in a few hundred steps, noisy enough that accuracy is not trivially 100 %
and small L-inf perturbations change predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def make_synthetic(
    num_train: int,
    num_test: int,
    num_classes: int = 10,
    image_size: int = 32,
    seed: int = 0,
    noise: float = 0.12,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (train_x uint8 [n,3,s,s], train_y int64, test_x, test_y)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g) * 2 - 1
    protos = F.interpolate(coarse, size=(image_size, image_size), mode="bicubic", align_corners=False)
    protos = protos / protos.abs().amax(dim=(1, 2, 3), keepdim=True)

    def split(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        contrast = 0.25 + 0.25 * torch.rand(n, 1, 1, 1, generator=g)
        x = 0.5 + contrast * protos[y] + noise * torch.randn(n, 3, image_size, image_size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = split(num_train)
    test_x, test_y = split(num_test)
    return train_x, train_y, test_x, test_y
