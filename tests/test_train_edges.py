"""train_ch6's edge cases: notebook detection, resume, fp16 divergence, input checks, atomic writes;
and layer_summary/block_shapes leaving the caller's network alone."""

import pytest
import torch
from torch import nn

from d2l_local import load_checkpoint, train_ch6
from d2l_local import train as train_mod

RUN = dict(lr=0.05, device="cpu", progress=False)

# Runs of one short epoch stay at chance; the test of the warning records it itself.
pytestmark = pytest.mark.filterwarnings("ignore:accuracy is still at chance")


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


# ---------------------------------------------------------------- live plot in notebooks


def test_in_notebook_recognises_subclasses_of_the_jupyter_shell(monkeypatch):
    import IPython
    from ipykernel.zmqshell import ZMQInteractiveShell
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    class Shell(ZMQInteractiveShell):  # as google.colab._shell.Shell
        pass

    for shell, expected in ((Shell.__new__(Shell), True), (ZMQInteractiveShell.__new__(ZMQInteractiveShell), True),
                            (TerminalInteractiveShell.__new__(TerminalInteractiveShell), False), (None, False)):
        monkeypatch.setattr(IPython, "get_ipython", lambda shell=shell: shell)
        assert train_mod._in_notebook() is expected, type(shell).__name__


# ---------------------------------------------------------------- resume


def rewrite_config(path, **changes):
    state = load_checkpoint(path)
    state["config"].update(changes)
    torch.save(state, path)


def test_resume_accepts_the_same_device_spelt_with_an_index(make_loaders, tmp_path):
    path = tmp_path / "ckpt.pt"
    train_ch6(mlp(), *make_loaders(64), 1, checkpoint=path, **RUN)
    rewrite_config(path, device="cpu:0")  # as a run started on "cuda" and resumed on try_gpu()'s "cuda:0"
    history = train_ch6(mlp(), *make_loaders(64), 2, checkpoint=path, resume=True, **RUN)
    assert [r["epoch"] for r in history.epochs] == [1, 2]
    rewrite_config(path, device="cuda:0")  # another kind of device is another run
    with pytest.raises(ValueError, match="different run"):
        train_ch6(mlp(), *make_loaders(64), 3, checkpoint=path, resume=True, **RUN)


def test_resume_refuses_a_checkpoint_longer_than_the_run(make_loaders, tmp_path):
    path = tmp_path / "ckpt.pt"
    train_ch6(mlp(), *make_loaders(64), 2, checkpoint=path, **RUN)
    with pytest.raises(ValueError, match=r"already holds 2 epochs, more than num_epochs=1\. Pass num_epochs=2"):
        train_ch6(mlp(), *make_loaders(64), 1, checkpoint=path, resume=True, **RUN)
    history = train_ch6(mlp(), *make_loaders(64), 2, checkpoint=path, resume=True, **RUN)  # as long: nothing to do
    assert [r["epoch"] for r in history.epochs] == [1, 2]
