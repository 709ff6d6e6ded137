"""CIFAR ResNet of depth 6n+2 and width multiplier w (He et al. 2016, §4.2), default ResNet-20 as used by
DVERGE / iGAT / SoE (spec §3.6).

3x3 stem (16w channels) -> three stages of n BasicBlocks (16w/32w/64w channels, strides 1/2/2) ->
global average pool -> Linear(64w, C). Shortcuts that change shape are 1x1 conv + BN (option B).
Depth 20 (n = 3) and width 1 are the paper's ResNet-20; ``model.depth`` / ``model.width`` pick others
(e.g. depth 8 for CPU studies). Inputs are images in [0, 1]; normalisation by the data set's mean/std
happens inside the model so every attack works in pixel space.

Optional parts used by some defenses (off by default, so the plain ResNet-20 has 272,474 parameters
for C = 10): ``hidden_dim`` adds Linear(64w, hidden) + LeakyReLU before the classifier (CLDL),
``aux_head`` adds a scalar confidence head on the pooled feature (SoE).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igat.specs.architecture import MAX_DEPTH, MAX_WIDTH, depth_error, width_error  # noqa: F401  (re-exported)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

STAGE_CHANNELS = (16, 32, 64)  # ResNet-20's stage widths; model.width multiplies all of them
def block_plan(depth: int, width: int) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) of every BasicBlock, in order; the stem outputs ``16 * width``."""
    for name, problem in (("depth", depth_error(depth)), ("width", width_error(width))):
        if problem:
            raise ValueError(f"{name} {problem}")
    n = (depth - 2) // 6
    plan: list[tuple[int, int, int]] = []
    in_ch = STAGE_CHANNELS[0] * width
    for base, stride in zip(STAGE_CHANNELS, (1, 2, 2), strict=True):
        out_ch = base * width
        for b in range(n):
            plan.append((in_ch, out_ch, stride if b == 0 else 1))
            in_ch = out_ch
    return plan


def make_activation(activation: str, slope: float = 0.1) -> nn.Module:
    if activation == "relu":
        return nn.ReLU()
    if activation == "leaky_relu":
        return nn.LeakyReLU(slope)
    raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act = act
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (first BN output before its activation, block output before the final activation)."""
        mid = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(self.act(mid))) + self.shortcut(x)
        return mid, out

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.forward_parts(x)[1])


@dataclass
class MemberOutput:
    logits: Tensor
    aux: Tensor | None = None  # SoE confidence logit, shape [B]
    hidden: Tensor | None = None  # CLDL pre-activation hidden vector, shape [B, hidden_dim]
    features: Tensor | None = None  # pooled 64w-d trunk feature


class ClassifierHeads:
    """``forward`` / ``forward_full`` over a pooled-feature ``trunk``: the optional CLDL hidden layer, the
    SoE confidence head and the classifier. Shared by :class:`CifarResNet` and its BatchNorm-folded copy."""

    hidden: nn.Linear | None
    fc: nn.Linear
    aux: nn.Linear | None

    def trunk(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_full(self, x: Tensor) -> MemberOutput:
        feat = self.trunk(x)
        hidden = None
        head_in = feat
        if self.hidden is not None:
            hidden = self.hidden(feat)
            head_in = F.leaky_relu(hidden, 0.1)
        aux = self.aux(feat).squeeze(1) if self.aux is not None else None
        return MemberOutput(logits=self.fc(head_in), aux=aux, hidden=hidden, features=feat)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.trunk(x)
        if self.hidden is not None:
            feat = F.leaky_relu(self.hidden(feat), 0.1)
        return self.fc(feat)


class CifarResNet(ClassifierHeads, nn.Module):
    """The ensemble member. ``num_feature_layers`` = depth: DVERGE's layer indices 1..depth (spec §2.4)."""

    def __init__(
        self,
        num_classes: int = 10,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        activation: str = "relu",
        leaky_slope: float = 0.1,
        hidden_dim: int | None = None,
        aux_head: bool = False,
        depth: int = 20,
        width: int = 1,
    ) -> None:
        super().__init__()
        plan = block_plan(depth, width)  # validates depth and width before anything is built
        self.depth, self.width = depth, width
        self.num_feature_layers = depth
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.act = make_activation(activation, leaky_slope)
        # Construction order is the RNG order of the default inits: keep it, so a seed gives the same
        # ResNet-20 as before the size knobs existed.
        stem, feat = plan[0][0], plan[-1][1]
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.blocks = nn.ModuleList(BasicBlock(i, o, s, self.act) for i, o, s in plan)
        self.feature_dim = feat
        self.hidden: nn.Linear | None = nn.Linear(feat, hidden_dim) if hidden_dim else None
        self.fc = nn.Linear(hidden_dim or feat, num_classes)
        self.aux: nn.Linear | None = nn.Linear(feat, 1) if aux_head else None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init with fan-out, as the reference ResNet: N(0, 2 / (k^2 * out_channels))
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def trunk(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(self.normalize(x))))
        for block in self.blocks:
            out = block(out)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def layer_features(self, x: Tensor, layer: int) -> Tensor:
        """Pre-activation feature at DVERGE layer index ``layer`` in 1..depth (1..20 for ResNet-20, spec §2.4).

        1 = stem conv+BN; for block k (0-based, (depth - 2) / 2 blocks) index 2+2k is the block's first
        BN output and 3+2k its output before the final activation; depth = logits.
        """
        if not 1 <= layer <= self.num_feature_layers:
            raise ValueError(f"layer must be in 1..{self.num_feature_layers}, got {layer}")
        out = self.bn1(self.conv1(self.normalize(x)))
        if layer == 1:
            return out
        out = self.act(out)
        for k, block in enumerate(self.blocks):
            mid, pre = block.forward_parts(out)
            if layer == 2 + 2 * k:
                return mid
            if layer == 3 + 2 * k:
                return pre
            out = self.act(pre)
        return self.forward(x)


ResNet20 = CifarResNet  # the historical name; ResNet20() is still the paper's ResNet-20


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
