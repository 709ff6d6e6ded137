"""Shared helpers for tests."""


def synthetic_config(**overrides):
    """A tiny, fast experiment config on synthetic 8x8 data (tests only)."""
    from igat.config import ExperimentConfig, deep_merge

    base = {
        "name": "test",
        "device": "cpu",
        "data": {"dataset": "synthetic", "synthetic_train_size": 256, "synthetic_test_size": 64,
                 "synthetic_image_size": 8, "synthetic_classes": 4},
        "model": {"num_members": 2},
        "defense": {"name": "standard"},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 1, "batch_size": 64, "eval_examples": 64, "eval_pgd_steps": 3, "log_every": 1},
        "eval": {"num_examples": 64, "attacks": [{"name": "natural"}, {"name": "pgd", "params": {"steps": 5}}]},
    }
    return ExperimentConfig.from_dict(deep_merge(base, overrides))
