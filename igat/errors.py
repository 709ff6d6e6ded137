"""Errors a user's input can cause, in a module without PyTorch, so the CLI and the worker can catch them before
(or without) loading the training code."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, not ours, unsafe, or written by another run."""
