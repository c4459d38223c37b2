"""Space-to-depth: the same convolution, values and gradients, and the network left as it was."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_local import NiN, PaperNiN
from d2l_local.space_to_depth import conv2d_space_to_depth, space_to_depth

# (batch, channels, height, width, kernel, stride, padding): NiN's first layer, then odd cases
CASES = [(2, 1, 224, 224, 11, 4, 0), (2, 3, 37, 41, 7, 2, 3), (3, 2, 30, 30, 5, 3, 1),
         (1, 1, 28, 28, 4, 4, 0), (2, 1, 19, 23, 3, 2, 2), (1, 3, 9, 9, 2, 5, 0)]


@pytest.mark.parametrize("n, c, h, w, k, stride, padding", CASES)
def test_equals_strided_conv2d_in_values_and_gradients(n, c, h, w, k, stride, padding):
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    weight = torch.randn(5, c, k, k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    grad_out = None
    results = []
    for conv in (lambda: F.conv2d(x, weight, bias, stride, padding),
                 lambda: conv2d_space_to_depth(x, weight, bias, stride, padding)):
        out = conv()
        grad_out = torch.randn_like(out) if grad_out is None else grad_out
        results.append((out, *torch.autograd.grad(out, (weight, bias), grad_out)))
    for ours, reference in zip(results[1], results[0]):
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference)
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)


def test_switches_only_nins_first_convolution_and_restores_it():
    net = NiN()
    first = net[0][0]
    x = torch.randn(2, 1, 224, 224)
    net.eval()
    with torch.no_grad():
        expected = net(x)
        with space_to_depth(net, "cpu"):
            patched = [m for m in net.modules() if "forward" in vars(m)]
            assert patched == [first]
            torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)
    assert not [m for m in net.modules() if "forward" in vars(m)]
    assert list(net.state_dict()) == list(NiN().state_dict())


@pytest.mark.parametrize("net, device", [(NiN(), "cuda"), (PaperNiN(), "cpu"), (nn.Conv2d(96, 8, 3, 2), "cpu")])
def test_leaves_other_devices_and_layers_alone(net, device):
    with space_to_depth(net, device):
        assert not [m for m in net.modules() if "forward" in vars(m)]


def test_train_ch6_uses_it_on_the_cpu_and_trains_the_same_weights(make_loaders, monkeypatch):
    from d2l_local import space_to_depth as module
    from d2l_local import train as train_module

    def strided_net():
        return nn.Sequential(nn.Conv2d(1, 8, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 10))

    calls = []
    folded = module.conv2d_space_to_depth
    monkeypatch.setattr(module, "conv2d_space_to_depth",
                        lambda *args, **kwargs: calls.append(1) or folded(*args, **kwargs))
    run = dict(lr=0.05, device="cpu", precision="fp32", progress=False)
    ours = strided_net()
    train_module.train_ch6(ours, *make_loaders(128), 1, **run)
    assert calls  # the strided convolution went through space-to-depth
    assert not [m for m in ours.modules() if "forward" in vars(m)]  # and was given back afterwards

    calls.clear()
    monkeypatch.setattr(train_module, "space_to_depth", lambda net, device: contextlib.nullcontext())
    monkeypatch.setattr(train_module, "fuse_relus", lambda net, device: net)  # it also runs space-to-depth
    plain = strided_net()
    train_module.train_ch6(plain, *make_loaders(128), 1, **run)
    assert not calls
    for a, b in zip(ours.state_dict().values(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
