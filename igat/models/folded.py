"""An inference-only copy of a CIFAR ResNet member (any depth / width) with BatchNorm folded into its convolutions.

In eval mode BatchNorm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
convolution with weight ``w * g / sqrt(v + eps)`` and bias ``b - m * g / sqrt(v + eps)``: the
same function up to float rounding (tests compare outputs and input gradients in float64).
Attacks and evaluation run the members in eval mode with frozen parameters and need input
gradients only, so they can use this copy: it drops every BatchNorm pass forward and backward,
uses in-place activations, and (on the CPU) computes the input gradient of stride-1 3x3
convolutions with the forward kernel on flipped weights, which the CPU backend runs faster than
its own backward-data kernel. Measured in docs/benchmarks.md (PGD-20 on 8 members).

The copy holds plain tensors, not parameters: it is a snapshot of the member's current weights
and running statistics, built by :meth:`igat.models.Ensemble.frozen` on entry and dropped on exit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igat.models.resnet import CifarResNet, ClassifierHeads


@dataclass(frozen=True)
class FoldedConv:
    weight: Tensor
    bias: Tensor
    stride: int
    padding: int
    # weight rotated 180 degrees with in/out channels swapped: the input gradient of a stride-1
    # 'same' convolution is the forward convolution of the output gradient with it
    weight_t: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.weight_t is not None and x.requires_grad:
            return _SameConv.apply(x, self.weight, self.bias, self.weight_t)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class _SameConv(torch.autograd.Function):
    """Stride-1 'same' convolution with constant weights; backward = forward conv with flipped weights.

    The backward is written with differentiable ops, so double backward (Hessian-vector products
    through a frozen model) still works: the input gradient is linear in the output gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, weight_t: Tensor) -> Tensor:
        ctx.save_for_backward(weight_t)
        ctx.padding = weight.shape[-1] // 2
        return F.conv2d(x, weight, bias, 1, ctx.padding)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None, None]:
        (weight_t,) = ctx.saved_tensors
        return F.conv2d(grad_out, weight_t, None, 1, ctx.padding), None, None, None


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, channels_last: bool, flipped_backward: bool) -> FoldedConv:
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        weight_t = None
        k = conv.kernel_size[0]
        if flipped_backward and conv.stride == (1, 1) and conv.padding == (k // 2, k // 2) and k % 2 == 1 \
                and conv.groups == 1 and conv.dilation == (1, 1):
            weight_t = weight.flip(2, 3).transpose(0, 1).contiguous(memory_format=fmt)
        return FoldedConv(weight.contiguous(memory_format=fmt), bias.contiguous(), conv.stride[0],
                          conv.padding[0], weight_t)


class FoldedResNet20(ClassifierHeads, nn.Module):
    """Eval-mode CifarResNet with folded BatchNorm; same forward / forward_full / layer_features."""

    def __init__(self, member: CifarResNet, channels_last: bool, flipped_backward: bool | None = None) -> None:
        super().__init__()
        if flipped_backward is None:  # measured win on the CPU only (docs/benchmarks.md)
            flipped_backward = member.conv1.weight.device.type == "cpu"
        fold = lambda conv, bn: fold_conv_bn(conv, bn, channels_last, flipped_backward)  # noqa: E731
        self.channels_last = channels_last
        self.num_classes = member.num_classes
        self.num_feature_layers = member.num_feature_layers  # DVERGE layers 1..depth, as the member
        self.mean, self.std = member.mean, member.std
        act = member.act
        self.negative_slope = act.negative_slope if isinstance(act, nn.LeakyReLU) else None
        self.stem = fold(member.conv1, member.bn1)
        self.blocks: list[tuple[FoldedConv, FoldedConv, FoldedConv | None]] = []
        for blk in member.blocks:
            short = None if isinstance(blk.shortcut, nn.Identity) else fold(blk.shortcut[0], blk.shortcut[1])
            self.blocks.append((fold(blk.conv1, blk.bn1), fold(blk.conv2, blk.bn2), short))
        # the heads are used as they are (frozen by the caller): CLDL hidden layer, SoE head, classifier
        self.hidden, self.fc, self.aux = member.hidden, member.fc, member.aux
        self.train(False)

    def _act(self, x: Tensor, inplace: bool = True) -> Tensor:
        # in place is safe: no op before an activation here saves its output for backward
        if self.negative_slope is None:
            return F.relu_(x) if inplace else F.relu(x)
        return F.leaky_relu_(x, self.negative_slope) if inplace else F.leaky_relu(x, self.negative_slope)

    def _input(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def trunk(self, x: Tensor) -> Tensor:
        out = self._act(self.stem(self._input(x)))
        for conv1, conv2, short in self.blocks:
            h = conv2(self._act(conv1(out)))
            out = self._act(h.add_(out if short is None else short(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def layer_features(self, x: Tensor, layer: int) -> Tensor:
        """As :meth:`CifarResNet.layer_features`: the folded conv output is the BN output."""
        if not 1 <= layer <= self.num_feature_layers:
            raise ValueError(f"layer must be in 1..{self.num_feature_layers}, got {layer}")
        if layer == self.num_feature_layers:
            return self.forward(x)
        out = self.stem(self._input(x))
        if layer == 1:
            return out
        out = self._act(out, inplace=False)
        for k, (conv1, conv2, short) in enumerate(self.blocks):
            mid = conv1(out)
            if layer == 2 + 2 * k:
                return mid
            pre = conv2(self._act(mid, inplace=False)) + (out if short is None else short(out))
            if layer == 3 + 2 * k:
                return pre
            out = self._act(pre, inplace=False)
        raise AssertionError("unreachable")


def fold_member(member: nn.Module, channels_last: bool) -> nn.Module:
    """The folded copy of a CIFAR ResNet member; any other module (toy MLPs) is returned as it is."""
    if isinstance(member, CifarResNet):
        return FoldedResNet20(member, channels_last)
    return member
