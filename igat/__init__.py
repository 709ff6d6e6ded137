"""iGAT Lab: ensemble adversarial-defense experiments (Deng & Mu, NeurIPS 2023) in pure PyTorch."""

__version__ = "0.1.0"
