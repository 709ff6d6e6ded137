"""CIFAR-10 / CIFAR-100 loading.

Search order for a data directory: ``DataConfig.root``, ``$IGAT_DATA_DIR``, ``../shared/data``
(relative to the working directory and to this repository), ``~/.cache/igat/data``. In each,
``cifar-10-batches-py`` / ``cifar-100-python`` (torchvision's layout) is used when present, else
an ImageFolder tree ``cifar10-jpeg/{train,test}/<class>/*.jpg`` (the offline JPEG copy; decoded
once and cached as uint8 tensors). If nothing is found and ``download`` is on, torchvision
downloads into the first candidate directory. Offline and absent: :class:`DataNotFoundError`
says where we looked and how to get the data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

REPO_ROOT = Path(__file__).resolve().parents[2]


class DataNotFoundError(FileNotFoundError):
    pass


@dataclass
class RawSplits:
    train_x: Tensor  # uint8 [n, 3, H, W]
    train_y: Tensor  # int64 [n]
    test_x: Tensor
    test_y: Tensor
    source: str  # human-readable description of where the data came from


def candidate_dirs(root: str | None) -> list[Path]:
    dirs: list[Path] = []
    if root:
        dirs.append(Path(root).expanduser())
    if os.environ.get("IGAT_DATA_DIR"):
        dirs.append(Path(os.environ["IGAT_DATA_DIR"]).expanduser())
    dirs += [Path.cwd() / ".." / "shared" / "data", REPO_ROOT / ".." / "shared" / "data"]
    dirs.append(Path.home() / ".cache" / "igat" / "data")
    seen, out = set(), []
    for d in dirs:
        key = str(d.resolve()) if d.exists() else str(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _cache_dir() -> Path:
    d = Path(os.environ.get("IGAT_CACHE_DIR", Path.home() / ".cache" / "igat"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _from_torchvision(cls, root: Path, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    train = cls(str(root), train=True, download=download)
    test = cls(str(root), train=False, download=download)

    def conv(ds) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    return (*conv(train), *conv(test))


def _decode_folder(split_dir: Path) -> tuple[Tensor, Tensor]:
    from PIL import Image

    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((split_dir / cls).iterdir()):
            with Image.open(f) as im:
                xs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            ys.append(label)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(ys, dtype=torch.int64)


def _from_image_folder(tree: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    key = hashlib.sha1(str(tree.resolve()).encode()).hexdigest()[:12]
    cache = _cache_dir() / f"imagefolder-{key}.pt"
    if cache.exists():
        d = torch.load(cache, weights_only=True)
        return d["train_x"], d["train_y"], d["test_x"], d["test_y"]
    train_x, train_y = _decode_folder(tree / "train")
    test_x, test_y = _decode_folder(tree / "test")
    tmp = cache.with_suffix(".tmp")
    torch.save({"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}, tmp)
    tmp.replace(cache)  # atomic: concurrent workers never read a half-written cache
    return train_x, train_y, test_x, test_y


def load_cifar(dataset: str, root: str | None = None, download: bool = True) -> RawSplits:
    import torchvision

    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be cifar10 or cifar100, got {dataset!r}")
    folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    tv_cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    dirs = candidate_dirs(root)
    for d in dirs:
        if (d / folder).is_dir():
            return RawSplits(*_from_torchvision(tv_cls, d, False), source=f"{d / folder} (torchvision pickles)")
        tree = d / f"{dataset}-jpeg"
        if (tree / "train").is_dir() and (tree / "test").is_dir():
            return RawSplits(*_from_image_folder(tree), source=f"{tree} (ImageFolder, JPEG re-encoding: figures are close to, not equal to, the original data)")
    if download:
        target = dirs[0] if root or os.environ.get("IGAT_DATA_DIR") else dirs[-1]
        target.mkdir(parents=True, exist_ok=True)
        try:
            return RawSplits(*_from_torchvision(tv_cls, target, True), source=f"{target / folder} (downloaded)")
        except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
            reason = f"download into {target} failed: {exc}"
    else:
        reason = "download is disabled (data.download = false)"
    looked = "\n".join(f"  - {d / folder}  or  {d / (dataset + '-jpeg')}/{{train,test}}" for d in dirs)
    raise DataNotFoundError(
        f"{dataset} data not found; {reason}.\nLooked in:\n{looked}\n"
        f"Get it with internet access (set data.download = true, or run python -c "
        f"\"import torchvision; torchvision.datasets.{tv_cls.__name__}('DIR', download=True)\"), "
        f"then point data.root or $IGAT_DATA_DIR at DIR."
    )
