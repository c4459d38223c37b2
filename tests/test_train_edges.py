"""train_ch6's edge cases: notebook detection, resume, fp16 divergence, input checks, atomic writes;
and layer_summary/block_shapes leaving the caller's network alone."""

import warnings

import pytest
import torch
from torch import nn

from d2l_local import DeviceLoader, NiN, PaperNiN, block_shapes, layer_summary, load_checkpoint, train_ch6
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


# ---------------------------------------------------------------- divergence under fp16


def test_fp16_run_whose_every_step_is_skipped_raises_training_diverged(make_loaders):
    # Every gradient of the first layer overflows, the GradScaler skips every step and halves its scale:
    # the loss and the weights stay finite, so only the scale shows that the run has diverged.
    net = mlp()
    net[1].weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(train_mod.TrainingDiverged) as err:  # 64 steps of 32; the scale is below 1e-4 after 30
        # init="default" leaves the weights as they are, so that they can be compared afterwards
        train_ch6(net, *make_loaders(2048, batch_size=32), 1, init="default", precision="fp16", **RUN)
    assert "every step was skipped" in str(err.value) and "smaller" in str(err.value)
    assert "epoch 1 (by step 40)" in str(err.value)  # the first check after the scale fell below 1e-4
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters()))  # no step was taken


# ---------------------------------------------------------------- the input check before training


def test_too_small_images_are_blamed_on_resize(make_loaders):
    train_iter, test_iter = make_loaders(64)
    train_iter.resize = 32  # NiN needs at least 67x67
    with pytest.raises(ValueError, match=r"32x32 images do not fit NiN: the smallest input it accepts is 67x67"):
        train_ch6(NiN(), train_iter, test_iter, 1, **RUN)


def test_other_errors_of_the_network_are_raised_unchanged(make_loaders):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with pytest.raises(RuntimeError, match="expected input.* to have 3 channels, but got 1 channels"):
        train_ch6(net, *make_loaders(64), 1, **RUN)  # Fashion-MNIST is grey: a channel mismatch, not a size one


class ColourLoader(DeviceLoader):
    """Three-channel images (the grey ones, repeated)."""

    def preprocess(self, images_uint8):
        return super().preprocess(images_uint8).repeat(1, 3, 1, 1)


def test_the_input_check_uses_the_loaders_channels(make_loaders):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    history = train_ch6(net, *make_loaders(64, cls=ColourLoader), 1, **RUN)
    assert len(history.epochs) == 1


# ---------------------------------------------------------------- the chance warning


def chance_warnings_of(*accuracies):
    """The chance warnings after the last of these epochs, given as (train_acc, test_acc)."""
    epochs = [dict(epoch=i + 1, train_acc=train, test_acc=test) for i, (train, test) in enumerate(accuracies)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_mod._warn_if_at_chance(epochs, 10, 0.1)
    return [str(w.message) for w in caught]


def test_a_run_that_starts_learning_late_in_epoch_1_is_not_at_chance():
    assert chance_warnings_of((0.14, 0.6)) == []  # the mean train accuracy is low, the test accuracy is not
    [message] = chance_warnings_of((0.10, 0.11))
    assert "has not started learning" in message
    [message] = chance_warnings_of((0.14, 0.6), (0.10, 0.10))  # a late start counts as a start
    assert "collapsed" in message
    assert chance_warnings_of((0.10, 0.11), (0.10, 0.10)) == []  # still not started: warned after epoch 1


# ---------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_a_failed_checkpoint_write_keeps_the_previous_one_and_no_temp_file(tmp_path, monkeypatch, error):
    path = tmp_path / "ckpt.pt"
    train_mod.save_checkpoint(path, {"epoch": torch.tensor(1)})
    train_mod.write_json_atomic(tmp_path / "history.json", {"epochs": [1]})

    def save_half_then_fail(obj, f):
        f.write(b"half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(error):
        train_mod.save_checkpoint(path, {"epoch": torch.tensor(2)})
    assert load_checkpoint(path) == {"epoch": torch.tensor(1)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "history.json"]
    assert (tmp_path / "history.json").read_text() == '{\n "epochs": [\n  1\n ]\n}\n'


# ---------------------------------------------------------------- layer_summary and block_shapes


def test_layer_summary_leaves_the_callers_network_alone():
    net = PaperNiN().eval()
    net(torch.randn(2, 1, 28, 28)).sum().backward()  # gradients the caller may still want
    params = list(net.parameters())
    values, grads = [p.detach().clone() for p in params], [p.grad.clone() for p in params]
    cost = layer_summary(net, (2, 1, 28, 28), device="meta")  # another device than the network's
    assert cost.params == sum(p.numel() for p in params)
    assert list(net.parameters()) == params and not net.training
    for p, value, grad in zip(params, values, grads):
        assert p.device.type == "cpu" and torch.equal(p, value)
        assert p.grad is not None and torch.equal(p.grad, grad)


class OnDeviceOf(nn.Module):
    """Passes its input through, after checking that it is on the device of its parameter."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        assert x.device == self.weight.device, (x.device, self.weight.device)
        return x


def test_block_shapes_builds_its_input_where_the_network_is():
    net = nn.Sequential(OnDeviceOf(), nn.Flatten()).to("meta")  # as a network on a GPU
    assert block_shapes(net, (1, 1, 4, 4)) == [("OnDeviceOf", (1, 1, 4, 4)), ("Flatten", (1, 16))]
    assert block_shapes(nn.Sequential(nn.Flatten()), (1, 1, 4, 4)) == [("Flatten", (1, 16))]  # no parameters
