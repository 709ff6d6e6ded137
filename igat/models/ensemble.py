"""An ensemble of N members with a per-member-batch interface.

``Ensemble.forward(x)`` accepts either one batch shared by all members ([B, 3, H, W]) or one
batch per member ([N, B, 3, H, W]; iGAT and DVERGE feed members different examples) and
returns member logits [N, B, C].

Execution: members are run one after another. On the CPU this is the fastest exact path we
measured (grouped-convolution fusion and torch.func.vmap are slower there, see
docs/benchmarks.md); ``channels_last=True`` speeds the loop up further. Inside
``Ensemble.frozen()`` in eval mode (attacks, evaluation) the members run as BatchNorm-folded
copies (:mod:`igat.models.folded`, ``fold_bn=True``): the same function up to float rounding,
about 1.2x faster again on the CPU. A fused grouped-conv engine for plain ResNet members lives
in :mod:`igat.models.fused` and round-trips exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from igat.models.combiners import EnsembleOutput, combine, log_output
from igat.models.resnet import MemberOutput, ResNet20

M = TypeVar("M", bound=nn.Module)


class Ensemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], channels_last: bool = False, fold_bn: bool = True) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.channels_last = channels_last
        self.fold_bn = fold_bn
        # BatchNorm-folded member copies while inside frozen(eval_mode=True) (a stack: contexts nest)
        self._folded_stack: list[list[nn.Module] | None] = []
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def resnet20(cls, num_members: int, channels_last: bool = False, fold_bn: bool = True,
                 **member_kwargs) -> Ensemble:
        """N CIFAR ResNet members; ``member_kwargs`` may set ``depth`` / ``width`` (default: ResNet-20)."""
        return cls([ResNet20(**member_kwargs) for _ in range(num_members)], channels_last, fold_bn)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def num_members(self) -> int:
        return len(self.members)

    def _member_input(self, x: Tensor, i: int) -> Tensor:
        xi = x[i] if x.dim() == 5 else x
        if self.channels_last:
            xi = xi.contiguous(memory_format=torch.channels_last)
        return xi

    def _check_input(self, x: Tensor) -> None:
        if x.dim() == 5 and x.shape[0] != self.num_members:
            raise ValueError(
                f"per-member input has {x.shape[0]} batches but the ensemble has {self.num_members} members"
            )

    @property
    def active_members(self) -> Sequence[nn.Module]:
        """The modules that execute the members now: the folded copies inside frozen(eval_mode=True)
        with ``fold_bn``, else the members themselves. Use these (not ``members``) to run a member in
        an attack; use ``members`` for anything that touches parameters."""
        folded = self._folded_stack[-1] if self._folded_stack else None
        return folded if folded is not None else self.members

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return torch.stack([m(self._member_input(x, i)) for i, m in enumerate(self.active_members)])

    def forward_output(self, x: Tensor) -> EnsembleOutput:
        """Member logits plus auxiliary outputs (SoE confidence) when members have them."""
        self._check_input(x)
        outs = [
            m.forward_full(xi) if hasattr(m, "forward_full") else MemberOutput(m(xi))  # plain modules (toy MLPs)
            for i, m in enumerate(self.active_members)
            for xi in (self._member_input(x, i),)
        ]
        aux = [o.aux for o in outs if o.aux is not None]
        return EnsembleOutput(torch.stack([o.logits for o in outs]), torch.stack(aux) if aux else None)

    def combined_probs(self, x: Tensor, combiner: str = "average") -> Tensor:
        return combine(self.forward_output(x), combiner)

    def log_output(self, x: Tensor, combiner: str = "average") -> Tensor:
        return log_output(self.combined_probs(x, combiner))

    def as_model(self, combiner: str = "average") -> CombinedModel:
        """A module whose forward returns the combiner's log-output: what attacks consume."""
        return CombinedModel(self, combiner)

    # --- state dict conversion -------------------------------------------------------
    def member_state_dicts(self) -> list[dict[str, Tensor]]:
        return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.members]

    def load_member_state_dicts(self, states: Sequence[dict[str, Tensor]]) -> None:
        if len(states) != self.num_members:
            raise ValueError(f"got {len(states)} member state dicts for {self.num_members} members")
        for m, s in zip(self.members, states, strict=True):
            m.load_state_dict(s)

    @contextlib.contextmanager
    def frozen(self, eval_mode: bool = True) -> Iterator[Ensemble]:
        """Attack context: no parameter gradients (attacks only need input gradients). In eval mode
        with ``fold_bn`` the members run as BatchNorm-folded snapshots of their current weights."""
        with frozen(self, eval_mode):
            folded = None
            if eval_mode and self.fold_bn:
                from igat.models.folded import fold_member

                folded = [fold_member(m, self.channels_last) for m in self.members]
            self._folded_stack.append(folded)
            try:
                yield self
            finally:
                self._folded_stack.pop()


@contextlib.contextmanager
def frozen(module: M, eval_mode: bool = True) -> Iterator[M]:
    """Freeze ``module``'s parameters (and switch it to eval mode) for an attack or a diagnostic that
    needs input gradients only; restores the requires_grad flags and train/eval modes on exit."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = [m.training for m in module.modules()]
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        if eval_mode:
            module.eval()
        yield module
    finally:
        for p, f in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(f)
        for m, t in zip(module.modules(), was_training, strict=True):
            m.training = t


class CombinedModel(nn.Module):
    """Ensemble + combiner as a plain classifier returning log-probabilities [B, C]."""

    def __init__(self, ensemble: Ensemble, combiner: str) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.combiner = combiner

    # The wrapper has no mode of its own: it reports the ensemble's, live. Tools that save and restore the
    # mode around an attack (torchattacks: ``given_training = model.training`` ... ``model.train()``) would
    # otherwise read True from a fresh wrapper and flip eval-mode members to train mode afterwards.
    @property
    def training(self) -> bool:  # type: ignore[override]
        ensemble = self._modules.get("ensemble")
        return bool(ensemble.training) if ensemble is not None else True

    @training.setter
    def training(self, mode: bool) -> None:
        pass  # Module.train(mode) still reaches the ensemble through the children

    def forward(self, x: Tensor) -> Tensor:
        return self.ensemble.log_output(x, self.combiner)
