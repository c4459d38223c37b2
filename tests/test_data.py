"""Fashion-MNIST: finding, verifying, fetching and loading, and what the user is told when it fails."""

import gzip
import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import d2l_local
from d2l_local import DataError, DeviceLoader, NiN, load_data_fashion_mnist, train_ch6
from d2l_local import data as data_mod

NAMES = list(data_mod.SHA256)
SMALLEST = "t10k-labels-idx1-ubyte"  # 10 kB: the cheapest file to damage


def payload_of(folder, name):
    path = Path(folder) / name
    if path.is_file():
        return path.read_bytes()
    return gzip.decompress((Path(folder) / f"{name}.gz").read_bytes())


def gz_of(folder, name):
    path = Path(folder) / f"{name}.gz"
    return path.read_bytes() if path.is_file() else gzip.compress((Path(folder) / name).read_bytes())


@pytest.fixture
def data_copy(real_data_dir, tmp_path, monkeypatch):
    """A copy of the real (.gz) files in a temporary folder that FASHION_MNIST_DIR points at."""
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name in NAMES:
        (folder / f"{name}.gz").write_bytes(gz_of(real_data_dir, name))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
    return folder


def no_partial_files(folder):
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".part")] == []


@pytest.fixture
def nothing_installed(tmp_path, monkeypatch):
    """No $FASHION_MNIST_DIR and no Debian copy: only the (empty, temporary) cache is left."""
    monkeypatch.delenv("FASHION_MNIST_DIR")
    monkeypatch.setattr(data_mod, "SYSTEM_DIR", tmp_path / "no-system-copy")


# ---------------------------------------------------------------- error messages


def test_missing_directory_says_what_to_do(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("FASHION_MNIST_DIR", str(missing))
    calls = []
    monkeypatch.setattr(data_mod.urllib.request, "urlopen", fake_urlopen(lambda name, url: b"", calls))
    with pytest.raises(DataError) as err:
        load_data_fashion_mnist(64, device="cpu")
    assert calls == []  # a wrong $FASHION_MNIST_DIR is reported, not replaced by a download
    message = str(err.value)
    assert str(missing) in message
    assert "not a directory" in message and "FASHION_MNIST_DIR" in message
    assert "unset it" in message or "Point it at" in message


def test_missing_file_is_named(data_copy):
    (data_copy / f"{SMALLEST}.gz").unlink()
    with pytest.raises(DataError) as err:
        d2l_local.find_data_dir()
    message = str(err.value)
    assert SMALLEST in message and str(data_copy) in message
    assert "Copy them there" in message
    for name in NAMES[:3]:  # the files that are there are not blamed
        assert name not in message


def test_missing_file_in_given_folder(data_copy):
    (data_copy / f"{SMALLEST}.gz").unlink()
    with pytest.raises(DataError) as err:
        data_mod.load_tensors(data_copy)
    message = str(err.value)
    assert str(data_copy / SMALLEST) in message and "missing" in message
    assert "apt-get install dataset-fashion-mnist" in message or "--fetch" in message


def test_nothing_found_anywhere(nothing_installed):
    with pytest.raises(DataError) as err:
        d2l_local.find_data_dir()
    message = str(err.value)
    assert "no-system-copy" in message and "apt-get install dataset-fashion-mnist" in message
    assert "--fetch" in message


def test_nothing_found_and_download_fails_says_both(nothing_installed, capsys):
    with pytest.raises(DataError) as err:
        load_data_fashion_mnist(64, device="cpu")
    message = str(err.value)
    assert "no-system-copy" in message and str(data_mod.cache_dir()) in message
    assert "downloading it failed" in message and "no network in the tests" in message
    assert "apt-get install dataset-fashion-mnist" in message and "FASHION_MNIST_DIR" in message
    assert "downloading it into the cache" in capsys.readouterr().out
    assert not data_mod.cache_dir().exists() or list(data_mod.cache_dir().iterdir()) == []


def test_truncated_gz_names_file_and_expected_digest(data_copy):
    path = data_copy / f"{SMALLEST}.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as err:
        data_mod.load_tensors()
    message = str(err.value)
    assert str(path) in message
    assert "truncated or corrupt" in message
    assert data_mod.SHA256[SMALLEST] in message
    assert "Replace it there" in message and "unset FASHION_MNIST_DIR" in message


def test_corrupt_payload_gives_expected_and_actual_digest(data_copy):
    payload = bytearray(payload_of(data_copy, SMALLEST))
    payload[-1] ^= 0xFF  # one wrong label, in a well-formed .gz file
    path = data_copy / f"{SMALLEST}.gz"
    path.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DataError) as err:
        data_mod.load_tensors()
    message = str(err.value)
    assert str(path) in message
    assert data_mod.SHA256[SMALLEST] in message
    assert hashlib.sha256(bytes(payload)).hexdigest() in message
    assert "Replace it there" in message


def test_corrupt_decompressed_file(data_copy):
    (data_copy / f"{SMALLEST}.gz").unlink()
    bad = b"\x00" * 100
    (data_copy / SMALLEST).write_bytes(bad)
    with pytest.raises(DataError) as err:
        data_mod.load_tensors()
    assert hashlib.sha256(bad).hexdigest() in str(err.value)
    assert data_mod.SHA256[SMALLEST] in str(err.value)


@pytest.mark.parametrize("where, advice", [
    ("system", ["apt-get install --reinstall dataset-fashion-mnist", "FASHION_MNIST_DIR"]),
    ("variable", ["Replace it there", "unset FASHION_MNIST_DIR"]),
    ("cache", ["Delete it", "python -m d2l_local data --fetch"]),
    ("elsewhere", ["Replace it with a good copy"]),
])
def test_corrupt_file_advice_depends_on_where_it_is(where, advice, tmp_path, monkeypatch):
    # --fetch writes only into the cache, so only there is "delete it and fetch" the way out.
    folder = {"system": tmp_path / "system", "variable": tmp_path / "variable",
              "cache": data_mod.cache_dir(), "elsewhere": tmp_path / "elsewhere"}[where]
    monkeypatch.setattr(data_mod, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "variable"))
    folder.mkdir(parents=True)
    bad = b"\x00" * 100
    (folder / SMALLEST).write_bytes(bad)
    with pytest.raises(DataError) as err:
        data_mod.read_payload(folder / SMALLEST, SMALLEST)
    message = str(err.value)
    assert data_mod.SHA256[SMALLEST] in message and hashlib.sha256(bad).hexdigest() in message
    for words in advice:
        assert words in message
    if where != "cache":
        assert "--fetch" not in message  # fetching would not replace this file


def test_damaged_deflate_stream_gives_data_error(data_copy):
    path = data_copy / f"{SMALLEST}.gz"
    raw = gzip.compress(payload_of(data_copy, SMALLEST))
    # The first deflate block header right after the 10-byte gzip header: BFINAL=1, BTYPE=11 (reserved).
    path.write_bytes(raw[:10] + b"\x07" + raw[11:])
    with pytest.raises(DataError) as err:
        data_mod.load_tensors()
    assert str(path) in str(err.value) and data_mod.SHA256[SMALLEST] in str(err.value)


@pytest.mark.parametrize("batch_size, resize, expected", [
    (0, None, "batch_size must be an int, at least 1; got 0"),
    (2.0, None, "batch_size must be an int, at least 1; got 2.0"),
    ("128", None, "batch_size must be an int, at least 1; got '128'"),
    (True, None, "batch_size must be an int, at least 1; got True"),
    (64, 0, "resize must be a positive image side"),
    (64, 64.0, "resize must be a positive image side"),
    (64, "224", "resize must be a positive image side"),
    (64, (64, 64, 64), "resize must be a positive image side"),
    (64, (64, 0), "resize must be a positive image side"),
    (64, (64, 96), "only square sizes are supported"),
])
def test_bad_batch_size_or_resize_says_why(batch_size, resize, expected, fashion):
    with pytest.raises(ValueError) as err:
        load_data_fashion_mnist(batch_size, resize=resize, device="cpu")
    assert expected in str(err.value)
    with pytest.raises(ValueError) as err:
        DeviceLoader(*fashion["test"], batch_size, resize=resize)
    assert expected in str(err.value)


@pytest.mark.parametrize("resize", [32, (32, 32), [32], np.int64(32), torch.tensor(32)])
def test_resize_takes_a_side_or_a_square_pair(resize, fashion):
    loader = DeviceLoader(fashion["test"][0][:8], fashion["test"][1][:8], np.int64(4), resize=resize)
    assert loader.image_size == 32 and type(loader.image_size) is int and type(loader.batch_size) is int
    X, _ = next(iter(loader))
    assert X.shape == (4, 1, 32, 32)


def test_resize_too_small_for_nin_names_minimum(fashion):
    images, labels = fashion["train"]
    loader = DeviceLoader(images[:8], labels[:8], 4, resize=32)
    with pytest.raises(ValueError) as err:
        train_ch6(NiN(), loader, loader, 1, 0.1, "cpu", progress=False)
    message = str(err.value)
    assert "32x32" in message
    assert "67x67" in message  # see test_models.test_nin_minimum_input_size
    assert "resize" in message


# ---------------------------------------------------------------- loading the real data


def check_tensors(sets):
    (train_x, train_y), (test_x, test_y) = sets["train"], sets["test"]
    assert train_x.shape == (60_000, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10_000, 28, 28) and test_x.dtype == torch.uint8
    assert train_y.shape == (60_000,) and test_y.shape == (10_000,)
    assert torch.bincount(train_y).tolist() == [6000] * 10
    assert torch.bincount(test_y).tolist() == [1000] * 10


def test_loads_copy_of_debian_files(data_copy, fashion):
    train_iter, test_iter = load_data_fashion_mnist(256, device="cpu")
    check_tensors({"train": (train_iter.images, train_iter.labels), "test": (test_iter.images, test_iter.labels)})
    assert torch.equal(test_iter.images, fashion["test"][0])
    X, y = next(iter(train_iter))
    assert X.shape == (256, 1, 28, 28) and X.dtype == torch.float32
    assert y.shape == (256,) and y.dtype == torch.int64
    assert len(train_iter) == 235 and len(test_iter) == 40


def test_loads_decompressed_copies(real_data_dir, tmp_path, monkeypatch, fashion):
    for name in NAMES:
        (tmp_path / name).write_bytes(payload_of(real_data_dir, name))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    sets = data_mod.load_tensors()
    check_tensors(sets)
    for split in ("train", "test"):
        for got, want in zip(sets[split], fashion[split]):
            assert torch.equal(got, want)


def test_whole_set_is_held_as_uint8_on_the_device():
    train_iter, test_iter = load_data_fashion_mnist(128, resize=64)
    device = d2l_local.try_gpu()
    for loader in (train_iter, test_iter):
        assert loader.images.dtype == torch.uint8
        assert loader.images.device.type == device.type
    assert train_iter.images.shape == (60_000, 28, 28)
    X, _ = next(iter(test_iter))
    assert X.shape == (128, 1, 64, 64) and X.dtype == torch.float32
    assert X.device.type == device.type
    assert X.is_contiguous(memory_format=torch.channels_last)


def test_batches_are_standardised(make_loaders):
    train_iter, _ = make_loaders(4096, batch_size=4096)
    X, _ = next(iter(train_iter))
    assert abs(X.mean().item()) < 0.05
    assert abs(X.std().item() - 1) < 0.05


def test_standardize_false_keeps_pixels_in_0_1_as_d2l(fashion):
    _, test_iter = load_data_fashion_mnist(256, device="cpu", standardize=False)
    X, _ = next(iter(test_iter))
    assert torch.equal(X[:, 0], fashion["test"][0][:256].float() / 255)


def test_pixel_statistics_are_exact_in_float32(fashion):
    """From a histogram: the float64 statistics rounded to float32, whatever the thread count (a float32 sum is not)."""
    images = fashion["train"][0]
    pixels = images.double() / 255
    assert data_mod._pixel_mean_std(images) == (pixels.mean().float().item(), pixels.std().float().item())


# ---------------------------------------------------------------- shuffling


def epoch_order(loader):
    return torch.cat([y for _, y in loader])


def test_shuffling_is_deterministic_per_seed_and_changes_per_epoch(fashion):
    images = fashion["train"][0][:300]
    ids = torch.arange(300)  # the "labels" say which image each example is

    def loader(seed):
        return DeviceLoader(images, ids, 64, shuffle=True, seed=seed)

    a, b = loader(5), loader(5)
    first, second = epoch_order(a), epoch_order(a)
    assert torch.equal(first, epoch_order(b))  # same seed, same order
    assert torch.equal(second, epoch_order(b))
    assert not torch.equal(first, second)  # a new order every epoch
    assert not torch.equal(first, epoch_order(loader(6)))  # another seed, another order
    assert torch.equal(first.sort().values, ids)  # every example exactly once
    a.set_epoch(0)
    assert torch.equal(epoch_order(a), first)  # set_epoch replays an epoch (resume)
    assert not torch.equal(first, ids)


def test_limited_shuffled_epoch_has_no_repeats(fashion):
    images = fashion["train"][0][:300]
    loader = DeviceLoader(images, torch.arange(300), 32, shuffle=True, seed=1)
    loader.limit = 100
    order = epoch_order(loader)
    assert len(order) == 100 and len(loader) == 4
    assert len(set(order.tolist())) == 100


def test_test_loader_keeps_order(fashion):
    loader = DeviceLoader(fashion["test"][0][:100], torch.arange(100), 32)
    assert torch.equal(epoch_order(loader), torch.arange(100))
    assert torch.equal(epoch_order(loader), torch.arange(100))


# ---------------------------------------------------------------- torchvision / d2l placement


def test_place_for_torchvision(data_copy, tmp_path):
    root = tmp_path / "data"
    raw_dir = data_mod.place_for_torchvision(root)
    assert raw_dir == root / "FashionMNIST" / "raw"
    for name in NAMES:
        assert hashlib.sha256((raw_dir / name).read_bytes()).hexdigest() == data_mod.SHA256[name]
    assert no_partial_files(root)
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)


def test_place_for_torchvision_is_read_by_torchvision(data_copy, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    root = tmp_path / "data"
    data_mod.place_for_torchvision(root)
    test_set = torchvision.datasets.FashionMNIST(root=str(root), train=False, download=False)
    assert len(test_set) == 10_000


def test_place_for_torchvision_replaces_a_bad_copy(data_copy, tmp_path):
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / SMALLEST).write_bytes(b"half a file")
    data_mod.place_for_torchvision(tmp_path / "data")
    assert hashlib.sha256((raw_dir / SMALLEST).read_bytes()).hexdigest() == data_mod.SHA256[SMALLEST]


def test_place_for_torchvision_is_atomic(data_copy, tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_mod.os, "fsync", disk_full)
    root = tmp_path / "data"
    with pytest.raises(OSError):
        data_mod.place_for_torchvision(root)
    raw_dir = root / "FashionMNIST" / "raw"
    assert no_partial_files(root)
    assert not any((raw_dir / name).exists() for name in NAMES)  # nothing half-written under a real name


# ---------------------------------------------------------------- fetching (no network: urlopen is faked)


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fake_urlopen(served, calls):
    """``urlopen`` that serves ``served(name, url)`` bytes for ``.../name.gz`` (or raises what it returns)."""

    def urlopen(url, timeout=None):
        calls.append(url)
        name = url.rsplit("/", 1)[-1].removesuffix(".gz")
        assert name in data_mod.SHA256, url
        result = served(name, url)
        if isinstance(result, Exception):
            raise result
        return FakeResponse(result)

    return urlopen


def test_fetch_downloads_and_verifies(real_data_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(data_mod.urllib.request, "urlopen",
                        fake_urlopen(lambda name, url: gz_of(real_data_dir, name), calls))
    folder = data_mod.fetch(tmp_path / "cache")
    assert folder == tmp_path / "cache"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    assert len(calls) == 4 and all(url.startswith(data_mod.MIRRORS[0]) for url in calls)
    check_tensors(data_mod.load_tensors(folder))
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o666 & ~data_mod._UMASK}  # not mkstemp's 0600


def test_loader_downloads_into_the_cache_when_nothing_is_found(nothing_installed, real_data_dir, fashion,
                                                               monkeypatch):
    calls = []
    monkeypatch.setattr(data_mod.urllib.request, "urlopen",
                        fake_urlopen(lambda name, url: gz_of(real_data_dir, name), calls))
    _, test_iter = load_data_fashion_mnist(256, device="cpu")
    assert len(calls) == 4
    cache = data_mod.cache_dir()
    for name in NAMES:
        assert hashlib.sha256(payload_of(cache, name)).hexdigest() == data_mod.SHA256[name]
    assert torch.equal(test_iter.images, fashion["test"][0])
    assert d2l_local.find_data_dir() == cache  # the next run finds them there, without the network
    assert no_partial_files(cache)


def test_fetch_uses_the_cache_by_default(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(data_mod.urllib.request, "urlopen",
                        fake_urlopen(lambda name, url: gz_of(real_data_dir, name), []))
    folder = data_mod.fetch()
    assert folder == tmp_path / "d2l_local" / "fashion-mnist"
    assert all((folder / f"{n}.gz").is_file() for n in NAMES)


def test_fetch_falls_back_to_second_mirror(real_data_dir, tmp_path, monkeypatch):
    calls = []

    def served(name, url):
        if url.startswith(data_mod.MIRRORS[0]):
            return urllib.error.URLError("mirror down")
        return gz_of(real_data_dir, name)

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", fake_urlopen(served, calls))
    folder = data_mod.fetch(tmp_path)
    assert len(calls) == 8
    check_tensors(data_mod.load_tensors(folder))


def test_fetch_truncated_download_leaves_nothing_trusted(real_data_dir, tmp_path, monkeypatch):
    def served(name, url):
        raw = gz_of(real_data_dir, name)
        return raw[: len(raw) // 2] if name == SMALLEST else raw

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", fake_urlopen(served, []))
    folder = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        data_mod.fetch(folder)
    message = str(err.value)
    assert SMALLEST in message and "could not download" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert data_mod._file_in(folder, SMALLEST) is None  # no file a later run would trust
    assert no_partial_files(folder)
    # and a later run with a good connection completes the folder
    monkeypatch.setattr(data_mod.urllib.request, "urlopen",
                        fake_urlopen(lambda name, url: gz_of(real_data_dir, name), []))
    check_tensors(data_mod.load_tensors(data_mod.fetch(folder)))


def test_fetch_wrong_content_is_rejected(real_data_dir, tmp_path, monkeypatch):
    wrong = gzip.compress(b"<html>rate limited</html>")
    monkeypatch.setattr(data_mod.urllib.request, "urlopen", fake_urlopen(lambda name, url: wrong, []))
    with pytest.raises(DataError, match="could not download"):
        data_mod.fetch(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_keeps_good_files_and_replaces_bad_ones(real_data_dir, tmp_path, monkeypatch):
    for name in NAMES:
        (tmp_path / f"{name}.gz").write_bytes(gz_of(real_data_dir, name))
    (tmp_path / f"{SMALLEST}.gz").write_bytes(b"garbage")
    calls = []
    monkeypatch.setattr(data_mod.urllib.request, "urlopen",
                        fake_urlopen(lambda name, url: gz_of(real_data_dir, name), calls))
    data_mod.fetch(tmp_path)
    assert [url.rsplit("/", 1)[-1] for url in calls] == [f"{SMALLEST}.gz"]  # only the bad one
    assert hashlib.sha256(payload_of(tmp_path, SMALLEST)).hexdigest() == data_mod.SHA256[SMALLEST]
