"""A fused execution engine for N plain CIFAR ResNet members (any one depth / width, default ResNet-20): one
network with grouped convolutions.

Member m's channels occupy slice [m*C, (m+1)*C) of every layer; convolutions use groups=N so
members never mix, BatchNorm over N*C channels is exactly per-member BatchNorm, and the heads
are a batched matmul. The conversion to and from per-member state dicts is exact, so the
fused engine is an execution choice, not a different model.

Measured (docs/benchmarks.md): on a 2-core CPU the per-member loop (especially channels_last)
is faster than this engine; grouped convolutions pay off only on a GPU, where one large kernel
launch beats N small ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igat.models.resnet import CIFAR10_MEAN, CIFAR10_STD, CifarResNet, block_plan, make_activation


def _gconv(n: int, cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(n * cin, n * cout, k, stride, k // 2, groups=n, bias=False)


class _FusedBlock(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1 = _gconv(n, cin, cout, 3, stride), nn.BatchNorm2d(n * cout)
        self.conv2, self.bn2 = _gconv(n, cout, cout, 3, 1), nn.BatchNorm2d(n * cout)
        self.act = act
        self.short_conv = _gconv(n, cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.short_bn = nn.BatchNorm2d(n * cout) if self.short_conv is not None else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.short_conv is None else self.short_bn(self.short_conv(x))
        return self.act(out + short)


class FusedResNet20Ensemble(nn.Module):
    def __init__(
        self,
        num_members: int,
        num_classes: int = 10,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        activation: str = "relu",
        leaky_slope: float = 0.1,
        depth: int = 20,
        width: int = 1,
    ) -> None:
        super().__init__()
        plan = block_plan(depth, width)  # the members' layout, so the state dicts convert one to one
        self.depth, self.width = depth, width
        n = self.num_members = num_members
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean).repeat(n).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).repeat(n).view(1, -1, 1, 1), persistent=False)
        self.act = make_activation(activation, leaky_slope)
        stem = plan[0][0]
        self.conv1, self.bn1 = _gconv(n, 3, stem, 3, 1), nn.BatchNorm2d(n * stem)
        self.blocks = nn.ModuleList(_FusedBlock(n, cin, cout, stride, self.act) for cin, cout, stride in plan)
        self.feature_dim = plan[-1][1]
        self.fc_weight = nn.Parameter(torch.empty(n, num_classes, self.feature_dim))
        self.fc_bias = nn.Parameter(torch.zeros(n, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, H, W] (shared) or [N, B, 3, H, W] (per member) -> logits [N, B, C]."""
        n = self.num_members
        if x.dim() == 5:
            if x.shape[0] != n:
                raise ValueError(f"per-member input has {x.shape[0]} batches but the ensemble has {n} members")
            b = x.shape[1]
            x = x.permute(1, 0, 2, 3, 4).reshape(b, n * 3, *x.shape[-2:])
        else:
            x = x.repeat(1, n, 1, 1)
        out = self.act(self.bn1(self.conv1((x - self.mean) / self.std)))
        for block in self.blocks:
            out = block(out)
        feat = F.adaptive_avg_pool2d(out, 1).flatten(1).view(-1, n, self.feature_dim)  # [B, N, 64w]
        return torch.einsum("bnf,ncf->nbc", feat, self.fc_weight) + self.fc_bias[:, None, :]

    # --- exact conversion to/from per-member CifarResNet state dicts ---------------------
    def _pairs(self) -> list[tuple[str, nn.Module]]:
        """(member-module prefix, fused module) for every conv/BN, in CifarResNet's naming."""
        pairs: list[tuple[str, nn.Module]] = [("conv1", self.conv1), ("bn1", self.bn1)]
        for i, blk in enumerate(self.blocks):
            p = f"blocks.{i}."
            pairs += [(p + "conv1", blk.conv1), (p + "bn1", blk.bn1), (p + "conv2", blk.conv2), (p + "bn2", blk.bn2)]
            if blk.short_conv is not None:
                pairs += [(p + "shortcut.0", blk.short_conv), (p + "shortcut.1", blk.short_bn)]
        return pairs

    @torch.no_grad()
    def load_member_state_dicts(self, states: Sequence[dict[str, Tensor]]) -> None:
        if len(states) != self.num_members:
            raise ValueError(f"got {len(states)} member state dicts for {self.num_members} members")
        for prefix, mod in self._pairs():
            if isinstance(mod, nn.Conv2d):
                mod.weight.copy_(torch.cat([s[prefix + ".weight"] for s in states], 0))
            else:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(mod, name).copy_(torch.cat([s[f"{prefix}.{name}"] for s in states], 0))
                mod.num_batches_tracked.copy_(states[0][prefix + ".num_batches_tracked"])
        self.fc_weight.copy_(torch.stack([s["fc.weight"] for s in states]))
        self.fc_bias.copy_(torch.stack([s["fc.bias"] for s in states]))

    @torch.no_grad()
    def member_state_dicts(self) -> list[dict[str, Tensor]]:
        n = self.num_members
        states: list[dict[str, Tensor]] = [{} for _ in range(n)]
        for prefix, mod in self._pairs():
            names = ("weight",) if isinstance(mod, nn.Conv2d) else ("weight", "bias", "running_mean", "running_var")
            for name in names:
                for m, chunk in enumerate(getattr(mod, name).chunk(n, 0)):
                    states[m][f"{prefix}.{name}"] = chunk.clone()
            if isinstance(mod, nn.BatchNorm2d):
                for m in range(n):
                    states[m][prefix + ".num_batches_tracked"] = mod.num_batches_tracked.clone()
        for m in range(n):
            states[m]["fc.weight"] = self.fc_weight[m].clone()
            states[m]["fc.bias"] = self.fc_bias[m].clone()
        return states

    @classmethod
    def from_members(cls, members: Sequence[CifarResNet]) -> FusedResNet20Ensemble:
        first = members[0]
        if any(m.hidden is not None or m.aux is not None for m in members):
            raise ValueError("the fused engine supports plain ResNet members only (no CLDL hidden layer / SoE head)")
        if len({(m.depth, m.width) for m in members}) != 1:
            raise ValueError("the fused engine needs members of one depth and width, got "
                             + ", ".join(f"{m.depth}x{m.width}" for m in members))
        act = first.act
        fused = cls(len(members), first.num_classes, first.mean.flatten().tolist(), first.std.flatten().tolist(),
                    "leaky_relu" if isinstance(act, nn.LeakyReLU) else "relu",
                    act.negative_slope if isinstance(act, nn.LeakyReLU) else 0.1, first.depth, first.width)
        fused.load_member_state_dicts([m.state_dict() for m in members])
        return fused.to(first.conv1.weight.device)


class FusedCombinedModel(nn.Module):
    """Fused ensemble + combiner: the same log-output as ``Ensemble.as_model`` (spec §3.1)."""

    def __init__(self, fused: FusedResNet20Ensemble, combiner: str) -> None:
        super().__init__()
        self.fused = fused
        self.combiner = combiner

    def forward(self, x: Tensor) -> Tensor:
        from igat.models.combiners import EnsembleOutput, combine, log_output

        return log_output(combine(EnsembleOutput(self.fused(x)), self.combiner))


def fusable(members: Sequence[nn.Module]) -> bool:
    return (all(isinstance(m, CifarResNet) and m.hidden is None and m.aux is None for m in members)
            and len({(m.depth, m.width) for m in members}) == 1)


def resolve_engine(engine: str, members: Sequence[nn.Module], device: torch.device | str) -> str:
    """'auto' = the fastest exact path we measured per device: the member loop on the CPU
    (docs/benchmarks.md), the fused grouped-conv engine on CUDA when the members are plain ResNets of one size."""
    if engine not in ("auto", "loop", "fused"):
        raise ValueError(f"engine must be auto, loop or fused, got {engine!r}")
    if engine == "fused" and not fusable(members):
        raise ValueError("engine 'fused' needs plain ResNet members of one depth and width "
                         "(no CLDL hidden layer / SoE head)")
    if engine == "auto":
        return "fused" if torch.device(device).type == "cuda" and fusable(members) else "loop"
    return engine


def combined_models(ensemble, combiners: Sequence[str], engine: str, device: torch.device | str) -> dict[str, nn.Module]:
    """One attackable model per combiner, executed by the resolved engine, in eval mode with frozen
    parameters (the fused copy is built once from the members' current weights: exact)."""
    if resolve_engine(engine, list(ensemble.members), device) == "loop" or "soe" in combiners:
        return {c: ensemble.as_model(c) for c in combiners}
    fused = FusedResNet20Ensemble.from_members(list(ensemble.members)).eval()
    fused.requires_grad_(False)
    return {c: FusedCombinedModel(fused, c) for c in combiners}
