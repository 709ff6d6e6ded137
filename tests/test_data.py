import numpy as np
import pytest
import torch
from PIL import Image

from igat.config import DataConfig
from igat.data import DataNotFoundError, TensorLoader, load_cifar, load_dataset, make_synthetic, random_crop_flip


def test_synthetic_is_seeded_and_balanced():
    a = make_synthetic(100, 20, 4, 8, seed=1)
    b = make_synthetic(100, 20, 4, 8, seed=1)
    c = make_synthetic(100, 20, 4, 8, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.uint8 and a[0].shape == (100, 3, 8, 8)
    assert torch.bincount(a[1]).tolist() == [25, 25, 25, 25]


def test_synthetic_classes_are_separable_by_nearest_prototype():
    tx, ty, vx, vy = make_synthetic(400, 200, 4, 8, seed=0)
    means = torch.stack([tx[ty == c].float().mean(0) for c in range(4)])
    pred = torch.cdist(vx.float().flatten(1), means.flatten(1)).argmin(1)
    assert (pred == vy).float().mean() > 0.9


def test_random_crop_flip_is_a_shifted_flipped_copy():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(2):
        padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        found = any(
            torch.equal(out[i], padded[:, dy : dy + 32, dx : dx + 32]) or torch.equal(out[i], padded[:, dy : dy + 32, dx : dx + 32].flip(-1))
            for dy in range(9)
            for dx in range(9)
        )
        assert found


def test_loader_is_reproducible_from_its_state():
    x, y, _, _ = make_synthetic(64, 16, 4, 8)
    loader = TensorLoader(x, y, 16, shuffle=True, augment=True, seed=5)
    list(loader)  # one epoch
    state = loader.state_dict()
    second = [b[0] for b in loader]
    loader.load_state_dict(state)
    again = [b[0] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(second, again))
    assert len(loader) == 4
    assert 0.0 <= float(second[0].min()) and float(second[0].max()) <= 1.0


def test_missing_cifar_offline_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IGAT_DATA_DIR", raising=False)
    monkeypatch.setattr("igat.data.cifar.REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DataNotFoundError) as info:
        load_cifar("cifar100", root=str(tmp_path / "nowhere"), download=False)
    msg = str(info.value)
    assert "nowhere" in msg and "cifar-100-python" in msg and "download" in msg


def test_image_folder_tree_is_read_in_label_order(tmp_path, monkeypatch):
    monkeypatch.setenv("IGAT_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for label, cls in enumerate(["airplane", "automobile"]):
            d = tmp_path / "cifar10-jpeg" / split / cls
            d.mkdir(parents=True)
            for k in range(n):
                value = 40 + 150 * label
                arr = np.full((32, 32, 3), value, np.uint8) + rng.integers(0, 3, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{k:04d}.jpg", quality=95)
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.train_x[ds.train_y == 1].float().mean() > ds.train_x[ds.train_y == 0].float().mean() + 100
    assert "JPEG" in ds.source
    assert list((tmp_path / "cache").glob("imagefolder-*.pt"))  # decoded once, cached


def test_equidistant_test_subset():
    ds = load_dataset(DataConfig(dataset="synthetic", synthetic_test_size=100, synthetic_image_size=8))
    x, y = ds.test_tensors(10)
    assert len(x) == 10 and torch.equal(y, ds.test_y[::10])


def test_train_subset_is_class_balanced_on_sorted_data(tmp_path, monkeypatch):
    # The offline CIFAR tree is sorted by class: a subset must not be a prefix (one class only).
    import igat.data as data_mod

    x = torch.zeros(100, 3, 8, 8, dtype=torch.uint8)
    y = torch.arange(10).repeat_interleave(10)
    fake = data_mod.RawSplits(x, y, x[:10], y[::10], "sorted")
    monkeypatch.setattr(data_mod, "load_cifar", lambda *a, **k: fake)
    ds = load_dataset(DataConfig(dataset="cifar10", train_subset=20))
    assert torch.bincount(ds.train_y, minlength=10).tolist() == [2] * 10


def test_equidistant_indices_cover_the_range():
    from igat.data import equidistant_indices

    assert equidistant_indices(10000, 1000).tolist() == list(range(0, 10000, 10))  # the paper's CW subset
    idx = equidistant_indices(50000, 4000)
    labels = idx // 5000  # class-sorted: 5,000 per class
    assert torch.bincount(labels, minlength=10).tolist() == [400] * 10
