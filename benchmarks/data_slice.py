"""Copy a class-balanced slice of the CIFAR-10 JPEG tree, small enough to travel to a lent GPU machine.

The device tool sends the repository and the paths named in ``carry`` (64 MiB in all), not ``../shared``: the
whole tree (60,000 files) does not fit, a slice does. The first ``--train-per-class`` / ``--test-per-class`` files
of each class folder (sorted names) are copied into ``DST/cifar10-jpeg/{train,test}/<class>/``, the layout
``igat.data`` reads (point ``$IGAT_DATA_DIR`` at DST). Figures measured on it are labelled as such.

Usage:
  python benchmarks/data_slice.py [--src ../shared/data/cifar10-jpeg] [--dst .gpu-data]
                                  [--train-per-class 1000] [--test-per-class 200]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_slice(src: Path, dst: Path, train_per_class: int, test_per_class: int) -> dict[str, int]:
    """Copy the slice; returns files per split. Refuses a source that is not a train/test class tree."""
    counts = {}
    for split, k in (("train", train_per_class), ("test", test_per_class)):
        split_dir = src / split
        classes = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        if not classes:
            raise SystemExit(f"error: {split_dir} holds no class folders (expected SRC/{split}/<class>/*.jpg)")
        out = dst / "cifar10-jpeg" / split
        shutil.rmtree(out, ignore_errors=True)
        n = 0
        for cls in classes:
            files = sorted(f for f in cls.iterdir() if f.is_file())[:k]
            (out / cls.name).mkdir(parents=True)
            for f in files:
                shutil.copyfile(f, out / cls.name / f.name)
            n += len(files)
        counts[split] = n
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
    ap.add_argument("--dst", default=str(ROOT / ".gpu-data"))
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--test-per-class", type=int, default=200)
    args = ap.parse_args()
    if args.train_per_class < 1 or args.test_per_class < 1:
        ap.error("--train-per-class and --test-per-class must be at least 1")
    counts = make_slice(Path(args.src), Path(args.dst), args.train_per_class, args.test_per_class)
    size = sum(f.stat().st_size for f in (Path(args.dst) / "cifar10-jpeg").rglob("*") if f.is_file())
    print(f"{counts['train']} train and {counts['test']} test images in {Path(args.dst) / 'cifar10-jpeg'} "
          f"({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
