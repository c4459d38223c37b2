"""Shared fixtures of the unit tests.

The tests run on the CPU with one intra-op thread: the machines that run them
are small and shared, and one thread avoids threads spinning against each
other (the results do not depend on it; the tests compare runs made in the
same process).

Every test sees a clean environment: ``D2L_LOCAL_QUICK`` unset,
``FASHION_MNIST_DIR`` pointing at the real data found when the session started,
and ``XDG_CACHE_HOME`` in a temporary folder, so no test reads or writes the
user's cache; and no test reaches the network.
"""

import os
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also works without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import d2l_local  # noqa: E402
from d2l_local import data  # noqa: E402

torch.set_num_threads(1)


_REAL_DIR = None
_NO_DATA = None


def pytest_sessionstart(session):
    # Remember where the data is before the per-test environment takes over.
    global _REAL_DIR, _NO_DATA
    try:
        _REAL_DIR = data.find_data_dir()
    except data.DataError as err:
        _NO_DATA = str(err)


@pytest.fixture(scope="session")
def real_data_dir():
    """The folder holding the real Fashion-MNIST files (found when the session started)."""
    if _REAL_DIR is None:
        pytest.fail(f"these tests need the real Fashion-MNIST files: {_NO_DATA}")
    return _REAL_DIR


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test reaches the network: a download fails as it does offline, unless the test fakes ``urlopen``."""

    def urlopen(url, timeout=None):
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("D2L_LOCAL_QUICK", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    if _REAL_DIR is not None:
        monkeypatch.setenv("FASHION_MNIST_DIR", str(_REAL_DIR))
    else:
        monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)


@pytest.fixture(scope="session")
def fashion(real_data_dir):
    """The real data set as CPU tensors: ``{"train": (images, labels), "test": (images, labels)}``."""
    return data.load_tensors(real_data_dir)


@pytest.fixture(scope="session")
def make_loaders(fashion):
    """``make_loaders(n, batch_size)``: loaders over the first ``n`` training and test images."""
    train_images, train_labels = fashion["train"]
    pixels = train_images[:10_000].float().div(255)
    mean, std = pixels.mean().item(), pixels.std().item()

    def make(n, batch_size=64, cls=d2l_local.DeviceLoader, seed=0):
        common = dict(mean=mean, std=std, device="cpu", seed=seed)
        train_iter = cls(train_images, train_labels, batch_size, shuffle=True, **common)
        test_iter = cls(*fashion["test"], batch_size, shuffle=False, **common)
        train_iter.limit = test_iter.limit = n
        return train_iter, test_iter

    return make


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture
def subprocess_env(repo_root):
    """Environment for running ``python -m d2l_local`` in a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.pop("D2L_LOCAL_QUICK", None)
    return env
