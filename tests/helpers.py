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


def tiny_trained_ensemble(seed: int):
    """(ensemble, test x, test y): two small conv members trained 200 Adam steps on 4 synthetic classes
    (8x8, 1,024 train / 128 test, data and init from ``seed``); undefended, in eval mode. Call with one thread."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from igat.data import make_synthetic
    from igat.models.ensemble import Ensemble

    def member() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4),
        )

    torch.manual_seed(seed)
    tx, ty, vx, vy = make_synthetic(1024, 128, 4, 8, seed=seed)
    tx, vx = tx.float() / 255, vx.float() / 255
    ens = Ensemble([member() for _ in range(2)])
    opt = torch.optim.Adam(ens.parameters(), 3e-3)
    for _ in range(200):
        idx = torch.randint(0, len(tx), (128,))
        loss = sum(F.cross_entropy(z, ty[idx]) for z in ens(tx[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ens.eval(), vx, vy
