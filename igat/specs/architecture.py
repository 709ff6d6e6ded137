"""Shape rules of the CIFAR ResNet members (torch-free: the config checks them before any model exists)."""

from __future__ import annotations

MAX_DEPTH = 110  # the deepest CIFAR ResNet of the original paper (n = 18)
MAX_WIDTH = 8


def depth_error(depth: int) -> str | None:
    """Why ``depth`` is not a CIFAR ResNet depth (6n+2, 1 <= n, at most MAX_DEPTH), or None."""
    if 8 <= depth <= MAX_DEPTH and (depth - 2) % 6 == 0:
        return None
    return f"must be a CIFAR ResNet depth 6n+2 in 8..{MAX_DEPTH} (8, 14, 20, 26, 32, ..., {MAX_DEPTH}); got {depth}"


def width_error(width: int) -> str | None:
    """Why ``width`` is not an allowed channel multiplier, or None."""
    if 1 <= width <= MAX_WIDTH:
        return None
    return f"must be an integer channel multiplier in 1..{MAX_WIDTH} (1 = 16/32/64 channels, the paper's); got {width}"


def check_layer(layer: int | None, depth: int) -> int:
    """The number of DVERGE layers of a depth-``depth`` member (stem, two per block, logits: = depth), after
    checking a fixed ``layer`` against it: the params alone allow up to MAX_DEPTH, the member decides."""
    if layer is not None and not 1 <= layer <= depth:
        raise ValueError(f"defense.params.layer must be in 1..{depth} (the DVERGE layers of a model.depth {depth} "
                         f"member), got {layer}")
    return depth
