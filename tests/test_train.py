"""train_ch6: learning, checkpoints and exact resume, divergence, quick mode, and d2l's call signatures."""

import copy
import inspect
import json
import os
import re
import warnings

import pytest
import torch
from torch import nn

import d2l_local
from d2l_local import (
    DeviceLoader,
    PaperNiN,
    TrainingDiverged,
    init_weights,
    load_checkpoint,
    multiply_out,
    product_step_operators,
    train_ch6,
)
from d2l_local import train as train_mod
from d2l_local.train import train_step

TIMING_KEYS = {"img_per_s", "seconds"}

# Short PaperNiN runs stay at chance; tests that check the warning record it themselves.
pytestmark = pytest.mark.filterwarnings("ignore:accuracy is still at chance")


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def records(history):
    """The per-epoch records without the timing keys (which differ run to run)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history.epochs]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def chance_warnings(caught):
    return [w for w in caught if "chance" in str(w.message)]


# ---------------------------------------------------------------- learning


def test_short_run_learns(make_loaders):
    train_iter, test_iter = make_loaders(512, batch_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train_ch6(mlp(), train_iter, test_iter, 3, 0.05, "cpu", progress=False)
    losses = [r["train_loss"] for r in history.epochs]
    assert len(losses) == 3
    assert losses[-1] < 0.75 * losses[0]
    assert history.final["test_acc"] > 0.5  # chance is 0.1
    assert chance_warnings(caught) == []


def test_history_records_and_config(make_loaders, tmp_path):
    train_iter, test_iter = make_loaders(128)
    path = tmp_path / "history.json"
    history = train_ch6(mlp(), train_iter, test_iter, 2, 0.05, "cpu", history_path=path, progress=False)
    assert [r["epoch"] for r in history.epochs] == [1, 2]
    for r in history.epochs:
        assert {"train_loss", "train_acc", "test_acc", "img_per_s", "seconds"} <= r.keys()
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1
    assert history.config["epochs"] == 2 and history.config["lr"] == 0.05
    assert history.config["batch_size"] == 64 and history.config["image_size"] == 28
    assert history.config["deterministic"] is False and history.config["clip_grad_norm"] is None
    assert history.config["quick"] is False
    saved = json.loads(path.read_text())
    assert saved["epochs"] == history.epochs and saved["config"] == history.config


def test_evaluate_accuracy_counts_correct_predictions(make_loaders):
    _, test_iter = make_loaders(300)

    class AlwaysClass(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return nn.functional.one_hot(torch.full((len(x),), self.k), 10).float() + self.dummy

    labels = torch.cat([y for _, y in test_iter])
    for k in (0, 7):
        want = (labels == k).float().mean().item()
        assert d2l_local.evaluate_accuracy(AlwaysClass(k), test_iter, "cpu") == pytest.approx(want)


# ---------------------------------------------------------------- checkpoints, resume, reproducibility

RUN = dict(lr=0.05, device="cpu", progress=False)
RUN_SEED = 0


@pytest.fixture(scope="module")
def paper_loaders(make_loaders):
    return make_loaders(192)  # 3 steps of 64 per epoch, 192 test images


@pytest.fixture(scope="module")
def uninterrupted(paper_loaders, tmp_path_factory):
    """PaperNiN trained for 2 epochs in one go, with a checkpoint."""
    path = tmp_path_factory.mktemp("uninterrupted") / "ckpt.pt"
    net = PaperNiN()
    history = train_ch6(net, *paper_loaders, 2, checkpoint=path, **RUN)
    return net, history, path


def test_checkpoint_loads_with_weights_only(uninterrupted):
    net, history, path = uninterrupted
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "history", "config"} <= state.keys()
    assert state["history"] == history.epochs
    assert state["config"]["epochs"] == 2
    assert load_checkpoint(path).keys() == state.keys()
    restored = PaperNiN()
    restored.load_state_dict(state["model"])
    assert_same_weights(restored, net)
    assert not list(path.parent.glob("*.part"))


def test_resumed_run_equals_uninterrupted_run(uninterrupted, paper_loaders, tmp_path):
    net_a, history_a, _ = uninterrupted
    path = tmp_path / "ckpt.pt"
    first = train_ch6(PaperNiN(), *paper_loaders, 1, checkpoint=path, **RUN)
    assert len(first.epochs) == 1
    net_b = PaperNiN()  # a fresh process would start from a fresh network
    history_b = train_ch6(net_b, *paper_loaders, 2, checkpoint=path, resume=True, **RUN)
    assert records(history_b) == records(history_a)
    assert_same_weights(net_b, net_a)
    assert len(load_checkpoint(path)["history"]) == 2


def test_resume_refuses_a_checkpoint_of_another_run(uninterrupted, paper_loaders):
    _, _, path = uninterrupted
    with pytest.raises(ValueError, match="different run"):
        train_ch6(PaperNiN(), *paper_loaders, 3, checkpoint=path, resume=True, lr=0.01, device="cpu",
                  progress=False)


def test_a_checkpoint_from_before_a_setting_existed_resumes(uninterrupted, paper_loaders, tmp_path):
    _, history, path = uninterrupted
    state = load_checkpoint(path)
    for setting in train_mod.CONFIG_ADDED_LATER:  # as written before train_ch6 had them
        del state["config"][setting]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    resumed = train_ch6(PaperNiN(), *paper_loaders, 3, checkpoint=old, resume=True, **RUN)
    assert records(resumed)[:2] == records(history) and len(resumed.epochs) == 3


class Interrupted(Exception):
    pass


class InterruptedLoader(DeviceLoader):
    """Stops the run at the first batch of the second epoch, like Ctrl-C or a lost Colab session."""

    def __iter__(self):
        if self.epoch >= 1:
            raise Interrupted
        yield from super().__iter__()


def test_interrupted_run_resumes_exactly_with_momentum_and_cosine(make_loaders, tmp_path):
    options = dict(momentum=0.9, schedule="cosine", **RUN)
    net_a = PaperNiN()
    history_a = train_ch6(net_a, *make_loaders(192), 2, **options)

    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupted):
        train_ch6(PaperNiN(), *make_loaders(192, cls=InterruptedLoader), 2, checkpoint=path, **options)
    assert len(load_checkpoint(path)["history"]) == 1
    net_b = PaperNiN()
    history_b = train_ch6(net_b, *make_loaders(192), 2, checkpoint=path, resume=True, **options)
    assert records(history_b) == records(history_a)
    assert_same_weights(net_b, net_a)


def test_cosine_run_cannot_be_extended_silently(make_loaders, tmp_path):
    options = dict(momentum=0.9, schedule="cosine", **RUN)
    path = tmp_path / "ckpt.pt"
    train_ch6(PaperNiN(), *make_loaders(64), 1, checkpoint=path, **options)
    # Two epochs of cosine decay differ from one epoch of decay plus one more: a checkpoint of the
    # 1-epoch run cannot be continued into the 2-epoch schedule, so the call must say so.
    with pytest.raises(ValueError):
        train_ch6(PaperNiN(), *make_loaders(64), 2, checkpoint=path, resume=True, **options)


def test_same_seed_same_history_other_seed_other_history(uninterrupted, paper_loaders):
    net_a, history_a, _ = uninterrupted
    net_b = PaperNiN()
    history_b = train_ch6(net_b, *paper_loaders, 2, **RUN)
    assert records(history_b) == records(history_a)
    assert_same_weights(net_b, net_a)
    history_c = train_ch6(PaperNiN(), *paper_loaders, 2, seed=1, **RUN)
    assert records(history_c) != records(history_a)


# ---------------------------------------------------------------- divergence


def test_huge_learning_rate_raises_training_diverged(paper_loaders):
    with pytest.raises(TrainingDiverged) as err:
        train_ch6(PaperNiN(), *paper_loaders, 1, 1e6, "cpu", progress=False)
    message = str(err.value)
    assert "NaN" in message and "learning rate" in message and "smaller" in message


def test_an_experiment_records_a_diverged_run_instead_of_stopping(paper_loaders, capsys, tmp_path):
    from d2l_local import experiments

    recipe = {k: experiments.PRESETS["cpu"].get(k, 0.0) for k in experiments.RECIPE_KEYS} | {"lr": 1e6}
    saved = tmp_path / "baseline.pt"
    saved.write_bytes(b"written before this run")
    run = experiments.run_one("cpu", {}, recipe, 0, torch.device("cpu"), paper_loaders, save_model=saved)
    assert not saved.exists()  # a diverged run leaves no baseline for load_model
    assert "NaN" in run["diverged"] and "diverged" in capsys.readouterr().out
    assert run["history"] == [] and run["final_train_acc"] is None and run["seconds_per_epoch"] is None
    # the network as training left it: NaN logits, one class for every image
    labels = torch.cat([y for _, y in paper_loaders[1]])
    assert run["final_test_acc"] in {(labels == c).sum().item() / len(labels) for c in range(10)}


def test_an_experiment_records_how_fast_its_products_ended_up_moving(paper_loaders, monkeypatch):
    from d2l_local import experiments

    monkeypatch.setenv("D2L_LOCAL_QUICK", "1")
    recipe = {k: experiments.PRESETS["cpu"].get(k, 0.0) for k in experiments.RECIPE_KEYS}
    pair = experiments.run_one("cpu", {"linear_1x1": True}, recipe, 0, torch.device("cpu"), paper_loaders)
    torch.manual_seed(0)
    start = d2l_local.product_step_gains(d2l_local.init_weights(PaperNiN(linear_1x1=True)))
    assert len(pair["final_product_step_gains"]) == 3 and pair["final_product_step_gains"] != start
    paper = experiments.run_one("cpu", {}, recipe, 0, torch.device("cpu"), paper_loaders)
    assert paper["final_product_step_gains"] == []


def test_an_experiment_passes_its_recipes_clipping_to_train_ch6(monkeypatch, paper_loaders):
    from d2l_local import experiments

    seen = {}

    def fake_train_ch6(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(experiments, "train_ch6", fake_train_ch6)
    [(_, _, changes)] = [v for v in experiments.GPU_VARIANTS["full_run_stability"] if v[0] == "clip_grad_norm=2"]
    recipe = {k: experiments.PRESETS["gpu"].get(k, 0.0) for k in experiments.RECIPE_KEYS} | changes
    with pytest.raises(RuntimeError, match="stop here"):
        experiments.run_one("cpu", {}, recipe, 0, torch.device("cpu"), paper_loaders)
    assert seen["clip_grad_norm"] == 2.0


class NaNAfter(nn.Module):
    """``inner``, until it has run ``after`` training steps; then NaN logits."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.steps = inner, after, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.steps += 1
            if self.steps > self.after:
                return out * float("nan")
        return out


def test_nan_keeps_the_previous_epochs_checkpoint(make_loaders, tmp_path):
    train_iter, test_iter = make_loaders(192)  # 3 steps per epoch
    path = tmp_path / "ckpt.pt"
    net = NaNAfter(mlp(), after=3)
    with pytest.raises(TrainingDiverged) as err:
        train_ch6(net, train_iter, test_iter, 3, 0.05, "cpu", checkpoint=path, progress=False)
    assert "epoch 2" in str(err.value) and "smaller" in str(err.value)
    assert [r["epoch"] for r in err.value.history.epochs] == [1]  # what an experiment records of the run
    state = load_checkpoint(path)
    assert [r["epoch"] for r in state["history"]] == [1]
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    restored = NaNAfter(mlp(), after=10**9)
    restored.load_state_dict(state["model"])
    assert not torch.isfinite(net.inner[1].weight).all()  # the network itself did diverge


class NaNWeightsAfter(nn.Module):
    """``inner``, plus a weight that turns NaN after ``after`` training steps without reaching the loss
    (as with a fused ReLU, which maps NaN activations to 0)."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.steps = inner, after, 0
        self.unused = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps > self.after:
                with torch.no_grad():
                    self.unused.fill_(float("nan"))
        return self.inner(x)


def test_nan_weights_stop_the_run_even_when_the_loss_stays_finite(make_loaders):
    net = NaNWeightsAfter(mlp(), after=1)
    with pytest.raises(TrainingDiverged) as err:
        train_ch6(net, *make_loaders(128), 1, 0.05, "cpu", progress=False)
    assert "the loss or the weights became NaN" in str(err.value) and "smaller" in str(err.value)


def test_invalid_training_arguments(make_loaders):
    loaders = make_loaders(64)
    for kwargs in (dict(num_epochs=0, lr=0.1), dict(num_epochs=1, lr=0.0), dict(num_epochs=1, lr=-1.0)):
        with pytest.raises(ValueError):
            train_ch6(mlp(), *loaders, device="cpu", progress=False, **kwargs)
    for bad in (2.5, "3", True):
        with pytest.raises(ValueError, match=f"num_epochs must be an int, at least 1; got {bad!r}"):
            train_ch6(mlp(), *loaders, bad, 0.1, "cpu", progress=False)
    with pytest.raises(ValueError, match="schedule"):
        train_ch6(mlp(), *loaders, 1, 0.1, "cpu", schedule="step", progress=False)
    with pytest.raises(ValueError, match="precision"):
        train_ch6(mlp(), *loaders, 1, 0.1, "cpu", precision="fp8", progress=False)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="clip_grad_norm must be positive"):
            train_ch6(mlp(), *loaders, 1, 0.1, "cpu", clip_grad_norm=bad, progress=False)


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
def test_train_step_clips_the_gradient_norm(make_loaders, max_norm):
    X, y = next(iter(make_loaders(64)[0]))
    torch.manual_seed(0)
    plain, clipped = mlp(), mlp()
    clipped.load_state_dict(plain.state_dict())
    steps, norms = {}, {}
    for name, net, clip in (("plain", plain, None), ("clipped", clipped, max_norm)):
        before = [p.detach().clone() for p in net.parameters()]
        optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        _, _, norms[name] = train_step(net, optimizer, scaler, X, y, torch.device("cpu"), "fp32", clip_grad_norm=clip)
        steps[name] = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, net.parameters())])
    norm = steps["plain"].norm()  # lr 1: the step is the gradient
    assert norms["plain"] is None
    torch.testing.assert_close(norms["clipped"], norm, rtol=1e-5, atol=0)  # the norm before clipping
    assert 1e-3 < norm < 1e3  # so that one bound clips and the other does not
    expected = steps["plain"] * min(1.0, max_norm / norm.item())
    torch.testing.assert_close(steps["clipped"], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("bias_scale", [None, [1.0, 4.0, 1.5]])
def test_sgd_scales_the_learning_rate_of_each_1x1_layer(make_loaders, bias_scale):
    X, y = next(iter(make_loaders(64)[0]))
    torch.manual_seed(0)
    net = PaperNiN(num_1x1=1)
    nn.init.normal_(net[6][2].weight, std=0.01)  # the last layer starts at zero: nothing would reach the others
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = train_mod.sgd(net, 0.1, lr_1x1_scale=[2.0, 3.0, 0.5], lr_1x1_bias_scale=bias_scale)
    nn.functional.cross_entropy(net(X), y).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    optimizer.step()
    layers = train_mod.conv1x1_layers(net)
    scale = {id(layer.weight): s for layer, s in zip(layers, (2.0, 3.0, 0.5))}
    scale |= {id(layer.bias): s for layer, s in zip(layers, bias_scale or (2.0, 3.0, 0.5))}
    assert len(scale) == 6  # weights and biases of the three 1x1 layers
    for p, b, g in zip(net.parameters(), before, grads):
        torch.testing.assert_close(b - p.detach(), 0.1 * scale.get(id(p), 1.0) * g, rtol=1e-4, atol=1e-8)
    assert len(train_mod.sgd(net, 0.1).param_groups) == 1 == len(train_mod.sgd(net, 0.1, lr_1x1_scale=1).param_groups)
    for bad in (0.0, [2.0, 3.0], [1.0, 1.0, -1.0]):
        with pytest.raises(ValueError, match="lr_1x1_scale must be a positive number or 3 positive numbers"):
            train_mod.sgd(net, 0.1, lr_1x1_scale=bad)
        with pytest.raises(ValueError, match="lr_1x1_bias_scale must be a positive number or 3 positive numbers"):
            train_mod.sgd(net, 0.1, lr_1x1_bias_scale=bad)


def test_a_preconditioned_layer_moves_as_the_pairs_product_does(make_loaders):
    """One SGD step of the linear pair and one of the same network multiplied out, its 1x1 layers preconditioned
    by the pair's operators: their products agree up to the step's second-order term (lr^2 g1 g2); unpreconditioned
    they do not. Layers without an operator take the plain step."""
    X, y = next(iter(make_loaders(64)[0]))
    torch.manual_seed(0)
    pair = init_weights(PaperNiN(linear_1x1=True))
    for layer in train_mod.conv1x1_layers(pair):  # no zero weights or biases: every term of the step takes part
        nn.init.normal_(layer.bias, std=0.1)
    nn.init.normal_(train_mod.conv1x1_layers(pair)[-1].weight, std=0.1)
    operators = product_step_operators(pair)
    lr = 1e-3

    def stepped_products(net, precondition=None):
        optimizer = train_mod.sgd(net, lr, precondition_1x1=precondition)
        nn.functional.cross_entropy(net.eval()(X), y).backward()  # eval: no dropout, the same function
        optimizer.step()
        return [torch.cat([m.weight[:, :, 0, 0], m.bias[:, None]], dim=1).detach()
                for m in train_mod.conv1x1_layers(multiply_out(net))]

    start = [torch.cat([m.weight[:, :, 0, 0], m.bias[:, None]], dim=1).detach()
             for m in train_mod.conv1x1_layers(multiply_out(pair))]
    one_layer = multiply_out(pair)
    pair_moved = stepped_products(pair)
    plain = stepped_products(copy.deepcopy(one_layer))
    preconditioned = stepped_products(one_layer, operators)
    for s, p, q, u in zip(start, pair_moved, preconditioned, plain):
        step, error, plain_error = (p - s).norm(), (p - q).norm(), (p - u).norm()
        assert error < 1e-2 * step < plain_error  # second order against first order
    # in some blocks only; the others take the plain step
    net, reference = copy.deepcopy(multiply_out(pair)), copy.deepcopy(multiply_out(pair))
    moved, plain_moved = stepped_products(net, [None, None, operators[2]]), stepped_products(reference)
    assert all(torch.equal(a, b) for a, b in zip(moved[:2], plain_moved[:2]))
    assert not torch.equal(moved[2], plain_moved[2])
    with pytest.raises(ValueError, match="one entry per 1x1 convolution \\(3\\), got 2"):
        train_mod.sgd(one_layer, lr, precondition_1x1=operators[:2])
    with pytest.raises(ValueError, match="1x1 convolution 1 \\(96 -> 48 channels\\) needs A 48x48 and B 97x97"):
        train_mod.sgd(one_layer, lr, precondition_1x1=[operators[1], None, None])


def test_train_ch6_records_the_1x1_learning_rates(make_loaders):
    history = train_ch6(PaperNiN(num_1x1=1), *make_loaders(64), 1, 0.01, "cpu", lr_1x1_scale=(2.0, 3.0, 0.5),
                        lr_1x1_bias_scale=(1.0, 1.0, 2.0), progress=False)
    assert history.config["lr_1x1_scale"] == [2.0, 3.0, 0.5] and history.config["lr_1x1_bias_scale"] == [1.0, 1.0, 2.0]
    assert history.config["precondition_1x1"] is None
    json.dumps(history.config)
    # preconditioned layers are recorded by a digest of their matrices: a resume must use the same ones
    operators = product_step_operators(init_weights(PaperNiN(linear_1x1=True)))
    config = train_ch6(PaperNiN(num_1x1=1), *make_loaders(64), 1, 0.01, "cpu", precondition_1x1=[None, *operators[1:]],
                       progress=False).config
    digests = config["precondition_1x1"]
    assert digests[0] is None and len(set(digests[1:])) == 2 and all(len(d) == 16 for d in digests[1:])
    json.dumps(config)


# ---------------------------------------------------------------- quick mode and the chance warning


class CountingLoader(DeviceLoader):
    seen = 0

    def __iter__(self):
        for X, y in super().__iter__():
            self.seen += len(y)
            yield X, y


def test_quick_mode(make_loaders, monkeypatch, capsys):
    monkeypatch.setenv("D2L_LOCAL_QUICK", "1")
    assert train_mod.quick_mode()
    train_iter, test_iter = make_loaders(2048, cls=CountingLoader)
    history = train_ch6(mlp(), train_iter, test_iter, 5, 0.05, "cpu", progress=False)
    assert len(history.epochs) == 1
    assert history.config["quick"] is True and history.config["epochs"] == 1
    assert train_iter.seen == train_mod.QUICK_IMAGES == 512
    assert test_iter.seen == 512
    assert "QUICK MODE" in capsys.readouterr().out


def test_quick_mode_off_by_default_and_with_0(monkeypatch):
    assert not train_mod.quick_mode()
    monkeypatch.setenv("D2L_LOCAL_QUICK", "0")
    assert not train_mod.quick_mode()


class ConstantLogits(nn.Module):
    """Predicts from a learned bias only: it cannot beat always guessing one class."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return self.bias.expand(len(x), 10)


def test_warns_when_accuracy_stays_at_chance(make_loaders):
    with pytest.warns(UserWarning, match="chance"):
        train_ch6(ConstantLogits(), *make_loaders(256), 1, 0.01, "cpu", progress=False)


class CollapsesAfter(nn.Module):
    """An MLP whose training forward passes return constant logits after ``steps`` of them."""

    def __init__(self, steps):
        super().__init__()
        self.mlp, self.steps = mlp(), steps

    def forward(self, x):
        if self.training:
            self.steps -= 1
        logits = self.mlp(x)
        return logits if self.steps >= 0 else 0 * logits


def test_warns_once_when_a_run_collapses_back_to_chance(make_loaders):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_ch6(CollapsesAfter(32), *make_loaders(512, batch_size=32), 4, 0.05, "cpu", progress=False)
    [warning] = chance_warnings(caught)  # epochs 1 and 2 learn, 3 and 4 are at chance
    assert re.search(r"collapsed: train accuracy fell back to chance in epoch 3 .* in epoch 2", str(warning.message))
    assert "clip_grad_norm=2" in str(warning.message)
    with warnings.catch_warnings(record=True) as caught:  # a run that already clips is not told to clip
        warnings.simplefilter("always")
        train_ch6(CollapsesAfter(32), *make_loaders(512, batch_size=32), 4, 0.05, "cpu", clip_grad_norm=1e9,
                  progress=False)
    [warning] = chance_warnings(caught)
    assert "collapsed" in str(warning.message) and "clip_grad_norm" not in str(warning.message)


def test_no_chance_warning_in_quick_mode(make_loaders, monkeypatch):
    monkeypatch.setenv("D2L_LOCAL_QUICK", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_ch6(ConstantLogits(), *make_loaders(256), 1, 0.01, "cpu", progress=False)
    assert chance_warnings(caught) == []


# ---------------------------------------------------------------- d2l-compatible calls


def positional(fn):
    return [p for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def assert_accepts_calls_of(ours, theirs):
    """Every positional parameter of ``theirs``, same name, order and default; extras keyword-only or defaulted."""
    mine, their = positional(ours), positional(theirs)
    assert [p.name for p in mine[:len(their)]] == [p.name for p in their]
    for m, t in zip(mine, their):
        if t.default is not inspect.Parameter.empty:
            assert m.default == t.default, m.name
    for m in mine[len(their):]:
        assert m.default is not inspect.Parameter.empty, f"extra positional parameter {m.name} needs a default"
    required = [p.name for p in inspect.signature(ours).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert set(required) <= {p.name for p in their}


def test_signatures_accept_d2l_calls():
    from d2l import torch as d2l  # make setup installs d2l: its absence is a failure, not a skip

    assert_accepts_calls_of(d2l_local.load_data_fashion_mnist, d2l.load_data_fashion_mnist)
    assert_accepts_calls_of(d2l_local.train_ch6, d2l.train_ch6)
    assert_accepts_calls_of(d2l_local.try_gpu, d2l.try_gpu)
    assert_accepts_calls_of(d2l_local.evaluate_accuracy_gpu, d2l.evaluate_accuracy_gpu)
    assert_accepts_calls_of(d2l_local.get_fashion_mnist_labels, d2l.get_fashion_mnist_labels)
    assert d2l_local.get_fashion_mnist_labels([0, 9]) == d2l.get_fashion_mnist_labels([0, 9])


def test_history_repr_is_one_line():
    history = d2l_local.History(epochs=[dict(epoch=1, train_loss=0.5, train_acc=0.8, test_acc=0.75)])
    assert repr(history) == "History(1 epochs: train loss 0.5000, train acc 0.8000, test acc 0.7500)"
    assert repr(d2l_local.History()) == "History(no epochs)"


def test_nin_block_signature_is_the_seeds():
    def seed_002_nin_block(in_channels, out_channels, kernel_size, strides, padding):
        """The seed's signature (d2l 1.0.3 has no nin_block; the chapters define it)."""

    assert_accepts_calls_of(d2l_local.nin_block, seed_002_nin_block)


def test_try_gpu_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert d2l_local.try_gpu() == torch.device("cpu")
    assert d2l_local.try_gpu(3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert d2l_local.try_gpu(1) == torch.device("cuda:1")


def test_pick_precision():
    assert d2l_local.pick_precision("cpu", "fp32") == "fp32"
    assert d2l_local.pick_precision("cuda", "fp16") == "fp16"  # an explicit choice is kept as is
    with pytest.raises(ValueError):
        d2l_local.pick_precision("cpu", "half")


def test_pick_precision_on_this_cpu():
    # read the flags here rather than through cpu_has_native_bf16, so that a wrong reading fails
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    native = " avx512_bf16" in flags or " amx_bf16" in flags
    assert d2l_local.pick_precision("cpu") == ("bf16" if native else "fp32")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_pick_precision_cpu_follows_its_bf16_instructions(monkeypatch, native, expected):
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: native)
    assert d2l_local.pick_precision("cpu") == expected


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_pick_precision_gpu_uses_bf16_only_where_native(monkeypatch, capability, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch 2.x says on a T4
    assert d2l_local.pick_precision("cuda:1") == expected
    assert asked == [torch.device("cuda:1")]  # the capability of the device asked about, not the current one


def test_keep_freed_memory_sets_and_restores_glibc_options(monkeypatch):
    from d2l_local import allocator

    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append((option, value))

        def malloc_trim(self, pad):
            calls.append(("trim", pad))

    monkeypatch.setattr(allocator, "_glibc", lambda: FakeLibc())
    with allocator.keep_freed_memory() as active:
        assert active and set(calls) == set(allocator.KEEP_FREED.items())
    assert set(calls[len(allocator.KEEP_FREED):]) == set(allocator.GLIBC_DEFAULTS.items()) | {("trim", 0)}
    calls.clear()
    with allocator.keep_freed_memory("cuda") as active:
        assert not active
    assert calls == []


def test_cudnn_autotune_only_on_a_gpu_and_restored_after(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with train_mod.cudnn_autotune("cpu"):
        assert torch.backends.cudnn.benchmark is False
    with train_mod.cudnn_autotune("cuda", enabled=False):
        assert torch.backends.cudnn.benchmark is False
    with pytest.raises(KeyboardInterrupt), train_mod.cudnn_autotune("cuda:0"):
        assert torch.backends.cudnn.benchmark is True
        raise KeyboardInterrupt
    assert torch.backends.cudnn.benchmark is False


def test_deterministic_algorithms_only_on_a_gpu_and_restored_after(monkeypatch):
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "deterministic", False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    for device, enabled in (("cpu", True), ("cuda", False)):
        with train_mod.deterministic_algorithms(device, enabled):
            assert not torch.are_deterministic_algorithms_enabled() and cudnn.benchmark
    with pytest.raises(KeyboardInterrupt), train_mod.deterministic_algorithms("cuda:0"):
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert cudnn.deterministic and not cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        raise KeyboardInterrupt
    assert not torch.are_deterministic_algorithms_enabled() and not cudnn.deterministic and cudnn.benchmark


@pytest.mark.parametrize("compile, mode", [(True, "default"), ("max-autotune", "max-autotune")])
def test_compile_takes_true_or_a_mode(compile, mode, monkeypatch):
    got = []
    monkeypatch.setattr(torch, "compile", lambda net, mode: got.append(mode) or net)
    net = mlp()
    assert train_mod.compiled(net, compile) is net and got == [mode]


def test_compile_refuses_an_unknown_mode_before_training(make_loaders):
    train_iter, test_iter = make_loaders(64)
    with pytest.raises(ValueError, match="compile must be True, False or one of default, reduce-overhead"):
        train_ch6(mlp(), train_iter, test_iter, 1, 0.1, "cpu", compile="fastest", progress=False)


def test_compiled_training_matches_eager(paper_loaders, monkeypatch):
    """torch.compile (inductor, C++ on the CPU) takes the same fp32 steps as eager PyTorch, up to rounding."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # eager's dropout masks
    start = PaperNiN()
    torch.manual_seed(RUN_SEED)
    d2l_local.init_weights(start, "d2l_local")  # what train_ch6 starts from
    eager, compiled = PaperNiN(), PaperNiN()
    for net, compile in ((eager, False), (compiled, True)):
        train_ch6(net, *paper_loaders, 1, seed=RUN_SEED, precision="fp32", compile=compile, **RUN)
    moved = torch.cat([(e.detach() - s).flatten() for e, s in zip(eager.parameters(), start.parameters())])
    apart = torch.cat([(c.detach() - e.detach()).flatten() for c, e in zip(compiled.parameters(), eager.parameters())])
    assert moved.norm() > 0
    assert apart.norm() < 1e-3 * moved.norm(), (apart.norm(), moved.norm())
