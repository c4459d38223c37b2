"""Fashion-MNIST, found offline, verified, and held on the training device.

The four IDX files are looked for in this order:

1. ``$FASHION_MNIST_DIR``;
2. ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package ``dataset-fashion-mnist``);
3. the per-user cache (``$XDG_CACHE_HOME/d2l_local/fashion-mnist``).

Only when none has them are they downloaded from the official mirrors, into
the cache. Every file is checked against the SHA-256 of its decompressed
payload, so Debian's re-compressed ``.gz`` files and the official ones both
pass. The whole set stays on the device as uint8 (about 55 MB); each batch is
converted, resized and normalised there.
"""

import gzip
import hashlib
import operator
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_HINT = f"sudo apt-get install {DEBIAN_PACKAGE}"
TEXT_LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")


def get_fashion_mnist_labels(labels):
    """Text labels of numeric Fashion-MNIST labels, as ``d2l.get_fashion_mnist_labels`` returns them."""
    return [TEXT_LABELS[int(label)] for label in labels]


class DataError(RuntimeError):
    """The Fashion-MNIST files are missing or damaged; the message says what to do."""


def cache_dir():
    """Per-user cache folder for downloaded files."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "d2l_local" / "fashion-mnist"


def _file_in(folder, name):
    """``folder/name`` or ``folder/name.gz``, whichever exists, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_all(folder):
    return all(_file_in(folder, name) for name in SHA256)


def find_data_dir(download=False):
    """The first folder in the search order that holds all four files.

    With ``download``, when ``$FASHION_MNIST_DIR`` is unset and no folder has
    the files, they are fetched into the cache (see :func:`fetch`) and the
    cache is returned. Raises :class:`DataError` when ``$FASHION_MNIST_DIR`` is
    set but incomplete (it is never skipped silently), or when no folder has
    the files (and the download, if tried, failed).
    """
    explicit = os.environ.get("FASHION_MNIST_DIR")
    if explicit:
        folder = Path(explicit)
        if not folder.is_dir():
            raise DataError(f"FASHION_MNIST_DIR={explicit} is not a directory. Point it at the folder "
                            "holding the four Fashion-MNIST IDX files, or unset it.")
        missing = [n for n in SHA256 if not _file_in(folder, n)]
        if missing:
            raise DataError(f"FASHION_MNIST_DIR={explicit} lacks {', '.join(missing)} (.gz or not). "
                            "Copy them there, or unset FASHION_MNIST_DIR.")
        return folder
    for folder in (SYSTEM_DIR, cache_dir()):
        if _has_all(folder):
            return folder
    not_found = f"Fashion-MNIST not found in $FASHION_MNIST_DIR, {SYSTEM_DIR} or {cache_dir()}"
    if not download:
        raise DataError(f"{not_found}. Install it with `{DEBIAN_HINT}`, "
                        "or download it with `python -m d2l_local data --fetch` where there is internet.")
    print(f"[d2l_local] {not_found}; downloading it into the cache from the official mirrors")
    try:
        return fetch()
    except DataError as err:
        raise DataError(f"{not_found}, and downloading it failed: {err} "  # err says how to install it
                        "Or point FASHION_MNIST_DIR at a folder holding the four IDX files.") from err


def _repair_advice(path):
    """How to replace the damaged file ``path``, which depends on the folder it is in."""
    folder = Path(path).parent
    explicit = os.environ.get("FASHION_MNIST_DIR")
    if folder == SYSTEM_DIR:
        return (f"Reinstall the package (`sudo apt-get install --reinstall {DEBIAN_PACKAGE}`), "
                "or set FASHION_MNIST_DIR to a folder holding good copies.")
    if explicit and folder == Path(explicit):
        return "Replace it there with a good copy, or unset FASHION_MNIST_DIR."
    if folder == cache_dir():
        return "Delete it and download it again (`python -m d2l_local data --fetch`)."
    return "Replace it with a good copy."


def read_payload(path, name):
    """Decompressed bytes of ``path``, checked against the SHA-256 of ``name``."""
    raw = Path(path).read_bytes()
    try:
        payload = gzip.decompress(raw) if str(path).endswith(".gz") else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is truncated or corrupt ({err}); expected SHA-256 {SHA256[name]} of the "
                        f"decompressed file, the raw file's is {hashlib.sha256(raw).hexdigest()}. "
                        + _repair_advice(path)) from err
    actual = hashlib.sha256(payload).hexdigest()
    if actual != SHA256[name]:
        raise DataError(f"{path} is truncated or corrupt: expected SHA-256 {SHA256[name]}, got {actual}. "
                        + _repair_advice(path))
    return payload


def _parse_idx(payload, name):
    """IDX bytes -> uint8 tensor (images N x 28 x 28, labels N)."""
    ndim = payload[3]
    dims = [int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(payload[4 + 4 * ndim:]), dtype=torch.uint8)
    if data.numel() != torch.Size(dims).numel():
        raise DataError(f"{name}: header says {dims} but holds {data.numel()} bytes")
    return data.reshape(dims)


def load_tensors(folder=None):
    """``{"train": (images, labels), "test": (images, labels)}`` as CPU uint8/int64 tensors.

    Without ``folder``, the files are looked up, and downloaded if need be, by
    :func:`find_data_dir`.
    """
    folder = Path(folder) if folder else find_data_dir(download=True)
    arrays = {}
    for name in SHA256:
        path = _file_in(folder, name)
        if path is None:
            raise DataError(f"{folder / name}(.gz) is missing. Reinstall the data (`{DEBIAN_HINT}`) "
                            "or run `python -m d2l_local data --fetch`.")
        arrays[name] = _parse_idx(read_payload(path, name), name)
    return {
        "train": (arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"].long()),
        "test": (arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"].long()),
    }


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import: os.umask can only be read by setting it


def write_atomic(path, write):
    """Call ``write(file)`` on a new temp file next to ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a partial one; on any error
    (Ctrl-C included) the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")  # a unique name
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make data, results and checkpoints private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a crash cannot leave an empty file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(folder=None, timeout=60):
    """Download the four files from the official mirrors into ``folder`` (the cache by default).

    Each download is verified before it is moved into place, so an interrupted
    or corrupt download never leaves a file that a later run would trust.
    """
    folder = Path(folder) if folder else cache_dir()
    for name in SHA256:
        existing = _file_in(folder, name)
        if existing:
            try:
                read_payload(existing, name)
                continue
            except DataError:
                existing.unlink()
        errors = []
        for mirror in MIRRORS:
            try:
                with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=timeout) as response:
                    raw = response.read()
                payload = gzip.decompress(raw)
                if hashlib.sha256(payload).hexdigest() != SHA256[name]:
                    raise DataError("checksum mismatch")
                write_atomic(folder / f"{name}.gz", lambda f, raw=raw: f.write(raw))
                break
            except Exception as err:  # noqa: BLE001 - any failure means: try the next mirror
                errors.append(f"{mirror}: {err}")
        else:
            raise DataError(f"could not download {name}: " + "; ".join(errors)
                            + f". Without internet, install `{DEBIAN_HINT}`.")
    return folder


def place_for_torchvision(root="../data"):
    """Put verified, decompressed copies where torchvision's FashionMNIST looks.

    ``d2l.load_data_fashion_mnist`` (root ``../data``) then finds the files in
    ``ROOT/FashionMNIST/raw/`` and skips its download, so the seeds' code runs
    unchanged and offline (where there is internet, missing files are first
    downloaded into the cache, as :func:`load_tensors` does).
    """
    source = find_data_dir(download=True)
    raw_dir = Path(root) / "FashionMNIST" / "raw"
    for name in SHA256:
        target = raw_dir / name
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256[name]:
            continue
        payload = read_payload(_file_in(source, name), name)
        write_atomic(target, lambda f, payload=payload: f.write(payload))
    return raw_dir


def positive_int(value):
    """An integer (int, NumPy or 0-d tensor integer; not a bool) of at least 1."""
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= 1
    except TypeError:
        return False


def _check_sizes(batch_size, resize):
    """``resize`` as one side (or None), after checking both; a ValueError says what is wrong.

    ``batch_size`` must be an int of at least 1. ``resize`` may be an int or an
    ``(h, w)`` pair, as ``torchvision.transforms.Resize`` (which d2l uses) takes
    it; the images stay square, so only ``h == w`` is accepted.
    """
    if not positive_int(batch_size):
        raise ValueError(f"batch_size must be an int, at least 1; got {batch_size!r}")
    if resize is None:
        return None
    sides = tuple(resize) if isinstance(resize, (tuple, list)) else (resize,)
    if len(sides) not in (1, 2) or not all(positive_int(side) for side in sides):
        raise ValueError(f"resize must be a positive image side (an int) or an (h, w) pair of them; got {resize!r}")
    if sides[0] != sides[-1]:
        raise ValueError(f"resize={resize!r}: only square sizes are supported (the loaders yield square "
                         "images, and train_ch6 checks and records one side); pass one int instead")
    return operator.index(sides[0])


def _pixel_mean_std(images_uint8):
    """Mean and standard deviation of the pixels scaled to [0, 1], from a histogram (no float copy of the set)."""
    counts = torch.bincount(images_uint8.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum()
    mean = (counts * values).sum() / n
    variance = (counts * (values - mean) ** 2).sum() / (n - 1)
    return mean.float().item(), variance.sqrt().float().item()  # float32, the images' precision


class DeviceLoader:
    """Batches of a uint8 image tensor that lives on the device.

    Iterating yields ``(X, y)``: ``X`` float32 of shape (batch, 1, size, size),
    channels_last, scaled to [0, 1] and standardised with the training set's
    mean and std; ``y`` int64 labels. Shuffling is a permutation drawn from
    ``seed`` and the epoch number, so it is the same on every run and resumes
    exactly; :meth:`set_epoch` picks the epoch, otherwise each pass counts one.
    """

    def __init__(self, images, labels, batch_size, *, resize=None, shuffle=False, seed=0,
                 mean=0.0, std=1.0, device=None):
        resize = _check_sizes(batch_size, resize)
        self.device = torch.device(device or "cpu")
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.resize, self.shuffle, self.seed = operator.index(batch_size), resize, shuffle, seed
        self.mean, self.std = mean, std
        self.epoch = 0
        self.limit = None

    @property
    def image_size(self):
        return self.resize or self.images.shape[-1]

    def __len__(self):
        n = self.num_examples
        return (n + self.batch_size - 1) // self.batch_size

    @property
    def num_examples(self):
        return min(len(self.labels), self.limit or len(self.labels))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def preprocess(self, images_uint8):
        """uint8 (N, 28, 28) on the device -> normalised float (N, 1, size, size)."""
        x = images_uint8.unsqueeze(1).float().div_(255)
        if self.resize and self.resize != x.shape[-1]:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def __iter__(self):
        n = self.num_examples
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(len(self.labels), generator=generator)[:n].to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        self.epoch += 1
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.preprocess(self.images[idx]), self.labels[idx]


def load_data_fashion_mnist(batch_size, resize=None, *, device=None, seed=0, data_dir=None, standardize=True):
    """Fashion-MNIST as ``(train_iter, test_iter)``, like ``d2l.load_data_fashion_mnist``.

    The data is verified, put on ``device`` (default: :func:`d2l_local.try_gpu`)
    as uint8, and resized/normalised there batch by batch. ``resize`` is an
    image side or a square ``(h, w)`` pair. Pixels are scaled to [0, 1] and,
    with ``standardize`` (the default), standardised with the training set's
    mean and std; ``standardize=False`` keeps them in [0, 1], as d2l does.
    """
    from .train import try_gpu

    resize = _check_sizes(batch_size, resize)  # before the data is loaded
    device = device or try_gpu()
    sets = load_tensors(data_dir)
    train_images, train_labels = sets["train"]
    mean, std = _pixel_mean_std(train_images) if standardize else (0.0, 1.0)
    common = dict(resize=resize, seed=seed, mean=mean, std=std, device=device)
    return (DeviceLoader(train_images, train_labels, batch_size, shuffle=True, **common),
            DeviceLoader(*sets["test"], batch_size, shuffle=False, **common))

