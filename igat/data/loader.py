"""Batches from uint8 tensors with the standard CIFAR augmentation, done per batch.

The loader owns a ``torch.Generator`` for shuffling and augmentation, so its state can be
checkpointed and a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int | None = None) -> Tensor:
    """Random crop with zero padding + random horizontal flip (torchvision's RandomCrop(32, 4) + flip).

    The default padding is 1/8 of the image side: 4 pixels for CIFAR's 32x32, 1 for tiny test images.
    """
    n, _, h, w = x.shape
    if padding is None:
        padding = max(1, h // 8)
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (oy[:, None] + torch.arange(h)[None, :]).to(x.device)  # [n, h]
    cols = ox[:, None] + torch.arange(w)[None, :]  # [n, w]
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(x.device)
    idx_r = rows[:, None, :, None].expand(n, x.shape[1], h, padded.shape[3])
    out = padded.gather(2, idx_r)
    idx_c = cols[:, None, None, :].expand(n, x.shape[1], h, w)
    return out.gather(3, idx_c)


class TensorLoader:
    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = True,
        augment: bool = False,
        noise_std: float = 0.0,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        max_batches: int | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError("x and y differ in length")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle, self.augment, self.noise_std = shuffle, augment, noise_std
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.max_batches = max_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.x) // self.batch_size if self.drop_last else -(-len(self.x) // self.batch_size)
        return min(n, self.max_batches) if self.max_batches else n

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            xb = self.x[idx].float().div_(255.0)
            if self.augment:
                xb = random_crop_flip(xb, self.generator)
            if self.noise_std > 0:
                # GAL/CLDL-style Gaussian noise on half of the batches' images, not clipped (spec §2.0)
                apply = (torch.rand(len(xb), 1, 1, 1, generator=self.generator) < 0.5).float()
                xb = xb + apply * self.noise_std * torch.randn(xb.shape, generator=self.generator)
            yield xb.to(self.device, non_blocking=True), self.y[idx].to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
