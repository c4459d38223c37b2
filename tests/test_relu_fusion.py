"""ReLU fusion: the same numbers as the plain network, bit for bit, and the network left as it was."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_local import NiN, PaperNiN, init_weights, relu_fusion
from d2l_local.relu_fusion import HAS_FUSED_CONV, conv2d_relu, fuse_relus, space_to_depth_relu
from d2l_local.space_to_depth import space_to_depth

pytestmark = pytest.mark.skipif(not HAS_FUSED_CONV, reason="this torch build has no fused oneDNN convolution")

NETWORKS = {
    "NiN": (NiN, {}, 224),
    "NiN without 1x1": (NiN, dict(num_1x1=0), 224),
    "NiN 3x3, fc head": (NiN, dict(kernel_1x1=3, head="fc"), 224),
    "NiN gradual squeeze": (NiN, dict(last_block=(192, 48, 10)), 224),
    "paper NiN": (PaperNiN, {}, 28),
    "paper NiN, three 1x1": (PaperNiN, dict(num_1x1=3), 28),
    "paper NiN, linear 1x1 pair": (PaperNiN, dict(linear_1x1=True), 28),
}


def _step(model, net, X, y, precision):
    """Logits and parameter gradients of one training step's forward and backward."""
    torch.manual_seed(1)  # the same dropout masks for both
    net.zero_grad()
    with space_to_depth(net, "cpu"), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        logits = model(X)
    F.cross_entropy(logits.float(), y).backward()
    return logits, [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("name", NETWORKS)
def test_same_logits_and_gradients_bit_for_bit(name, precision):
    """In the layout d2l_local trains in (channels_last); other layouts may sum in another order."""
    cls, options, size = NETWORKS[name]
    torch.manual_seed(0)
    net = init_weights(cls(**options), "kaiming").to(memory_format=torch.channels_last).train()
    X, y = torch.randn(3, 1, size, size), torch.tensor([0, 3, 9])
    fused = fuse_relus(net, "cpu")
    assert fused is not net
    plain_logits, plain_grads = _step(net, net, X, y, precision)
    fused_logits, fused_grads = _step(fused, net, X, y, precision)
    assert plain_grads[0].abs().sum() > 0  # gradients reached the first layer
    torch.testing.assert_close(fused_logits, plain_logits, rtol=0, atol=0)
    for fused_grad, plain_grad in zip(fused_grads, plain_grads):
        torch.testing.assert_close(fused_grad, plain_grad, rtol=0, atol=0)


def test_the_fused_kernel_runs_under_bf16_only(monkeypatch):
    """bf16 takes the fused kernel (so the bit-for-bit test above tests it); fp32 runs the two layers."""
    calls = []
    fused_apply = relu_fusion._Conv2dReLU.apply
    monkeypatch.setattr(relu_fusion._Conv2dReLU, "apply", lambda *args: calls.append(1) or fused_apply(*args))
    net = init_weights(PaperNiN(), "kaiming").to(memory_format=torch.channels_last)
    fused, X = fuse_relus(net, "cpu"), torch.randn(2, 1, 28, 28)
    with torch.autocast("cpu", torch.bfloat16):
        fused(X)
    assert len(calls) == 2 + 2 + 3  # the first two blocks end in max pooling, the last in global average pooling
    fused(X)
    assert len(calls) == 7


def _called_modules(graph_module):
    return [graph_module.get_submodule(n.target) for n in graph_module.graph.nodes if n.op == "call_module"]


def test_rewrites_nin_as_documented():
    net = NiN()
    fused = fuse_relus(net, "cpu")
    functions = [n.target for n in fused.graph.nodes if n.op == "call_function"]
    # each block fuses its first two convolutions (the third one ends in max pooling), the last block
    # all three; block 1's first one is strided over one channel, so it also runs space-to-depth
    assert functions.count(space_to_depth_relu) == 1 and functions.count(conv2d_relu) == 8
    modules = _called_modules(fused)
    assert modules[0] is net[0][4]  # block 1's last convolution
    for pool in (net[1], net[3], net[5]):
        assert isinstance(modules[modules.index(pool) + 1], nn.ReLU)  # ReLU now after each pooling
    assert sum(isinstance(m, nn.ReLU) for m in modules) == 3
    assert set(map(id, fused.parameters())) == set(map(id, net.parameters()))
    assert list(net.state_dict()) == list(NiN().state_dict())


def test_modules_with_hooks_are_left_alone():
    torch.manual_seed(0)
    net = init_weights(PaperNiN(), "kaiming").to(memory_format=torch.channels_last).eval()
    seen = []
    relu = net[0][1]  # after the first 5x5 convolution
    relu.register_forward_hook(lambda module, inputs, output: seen.append(output))
    fused = fuse_relus(net, "cpu")
    assert relu in _called_modules(fused) and net[0][0] in _called_modules(fused)
    X = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = net(X)
        torch.testing.assert_close(fused(X), expected, rtol=0, atol=0)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1]) and seen[0].min() == 0


class _CountsSteps(nn.Module):
    """A forward of its own, with a side effect a tracer would run once and then drop."""

    def __init__(self):
        super().__init__()
        self.body, self.steps = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), 0

    def forward(self, x):
        self.steps += 1
        return self.body(x)


def test_pooling_that_returns_indices_keeps_its_relu_before_it():
    net = nn.Sequential(nn.Identity(), nn.ReLU(), nn.MaxPool2d(2, return_indices=True))
    fused = fuse_relus(net, "cpu")
    assert [type(m) for m in _called_modules(fused)] == [nn.Identity, nn.ReLU, nn.MaxPool2d]
    x = torch.randn(2, 1, 9, 9)
    for ours, reference in zip(fused(x), net(x)):
        torch.testing.assert_close(ours, reference)


def test_other_devices_and_hand_written_forwards_are_left_as_they_are():
    net = NiN()
    assert fuse_relus(net, "cuda") is net
    counting = _CountsSteps()
    assert fuse_relus(counting, "cpu") is counting
    inside = nn.Sequential(_CountsSteps(), nn.Flatten())
    assert fuse_relus(inside, "cpu") is inside


@pytest.mark.filterwarnings("ignore:accuracy is still at chance")  # two steps only
def test_train_ch6_trains_the_same_weights_with_and_without_it(make_loaders, monkeypatch):
    from d2l_local import train as train_module

    used = []

    def recording(net, device):
        model = fuse_relus(net, device)
        used.append(model is not net)
        return model

    def trained(fuse):
        monkeypatch.setattr(train_module, "fuse_relus", fuse)
        net = PaperNiN()
        history = train_module.train_ch6(net, *make_loaders(128), 1, 0.1, "cpu", precision="bf16", progress=False)
        return net, history

    fused_net, fused_history = trained(recording)
    plain_net, plain_history = trained(lambda net, device: net)
    assert used == [True]
    assert fused_history.epochs[0]["train_loss"] == plain_history.epochs[0]["train_loss"]
    for fused_param, plain_param in zip(fused_net.state_dict().values(), plain_net.state_dict().values()):
        torch.testing.assert_close(fused_param, plain_param, rtol=0, atol=0)
