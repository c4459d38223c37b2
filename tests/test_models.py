"""Models: shapes and sizes against the seeds, the block options, and the cost summary."""

import copy
import math

import pytest
import torch
from torch import nn

from d2l_local import (
    NiN,
    PaperNiN,
    block_shapes,
    build_model,
    copy_weights,
    count_parameters,
    init_weights,
    layer_summary,
    min_input_size,
    mlpconv,
    multiply_out,
    nin_block,
    product_bias_step_gains,
    product_step_gains,
    product_step_operators,
    training_flops_per_image,
)
from d2l_local.models import DEFAULT_SIZE

# What seed 002 prints for a (1, 1, 224, 224) input, layer by layer.
SEED_002_SHAPES = [
    ("Sequential", (1, 96, 54, 54)),
    ("MaxPool2d", (1, 96, 26, 26)),
    ("Sequential", (1, 256, 26, 26)),
    ("MaxPool2d", (1, 256, 12, 12)),
    ("Sequential", (1, 384, 12, 12)),
    ("MaxPool2d", (1, 384, 5, 5)),
    ("Dropout", (1, 384, 5, 5)),
    ("Sequential", (1, 10, 5, 5)),
    ("AdaptiveAvgPool2d", (1, 10, 1, 1)),
    ("Flatten", (1, 10)),
]

# (in, out, kernel) of the spatial convolution of each NiN block.
NIN_BLOCKS = [(1, 96, 11), (96, 256, 5), (256, 384, 3), (384, 10, 3)]


def block_params(c_in, c_out, k, num_1x1=2, kernel_1x1=1):
    """Parameters of a NiN block, by hand: conv (weights + bias), then num_1x1 c_out->c_out convs."""
    return c_in * c_out * k * k + c_out + num_1x1 * (c_out * c_out * kernel_1x1 ** 2 + c_out)


def conv_forward_flops(conv, out_shape):
    """2 * Cin * Cout * kh * kw * H * W per image (a multiply-add is two FLOPs), ignoring the bias."""
    kh, kw = conv.kernel_size
    _, _, h, w = out_shape
    return 2 * conv.in_channels // conv.groups * conv.out_channels * kh * kw * h * w


def conv_output_shapes(net, input_shape):
    """Output shape of every Conv2d of ``net`` for one forward pass, in order."""
    shapes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.append((mod, tuple(out.shape))))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(input_shape))
    for h in hooks:
        h.remove()
    return shapes


# ---------------------------------------------------------------- the seeds' network


def test_nin_has_the_seeds_parameter_count():
    net = NiN()
    assert count_parameters(net) == 1_992_166
    assert sum(block_params(*b) for b in NIN_BLOCKS) == 1_992_166  # the hand count agrees


def test_block_shapes_match_seed_002_printout():
    assert block_shapes(NiN(), (1, 1, 224, 224)) == SEED_002_SHAPES


def test_block_shapes_restores_training_mode():
    net = NiN().train()
    block_shapes(net, (1, 1, 224, 224))
    assert net.training


def test_seed_000_avgpool5_equals_adaptive_pooling_at_224():
    """Seed 000 ends with AvgPool2D(5); seed 002 with AdaptiveAvgPool2d(1): same network at 224."""
    torch.manual_seed(0)
    net = NiN().eval()
    seed_000 = copy.deepcopy(net)
    assert isinstance(seed_000[-2], nn.AdaptiveAvgPool2d)
    seed_000[-2] = nn.AvgPool2d(5)
    x = torch.randn(2, 1, 224, 224)
    with torch.no_grad():
        features = nn.Sequential(*list(net)[:-2])(x)
        assert features.shape[-2:] == (5, 5)
        assert torch.allclose(net(x), seed_000(x), atol=1e-6)


def test_nin_minimum_input_size():
    # conv 11/4 -> pool 3/2 -> pool 3/2 -> pool 3/2 needs (67 - 11) / 4 + 1 = 15 -> 7 -> 3 -> 1.
    net = NiN()
    assert min_input_size(net) == 67
    meta = copy.deepcopy(net).to("meta").eval()
    assert meta(torch.empty(1, 1, 67, 67, device="meta")).shape == (1, 10)
    with pytest.raises(RuntimeError):
        meta(torch.empty(1, 1, 66, 66, device="meta"))


# ---------------------------------------------------------------- the paper's MNIST network


def test_paper_nin_shapes_28_14_7():
    assert block_shapes(PaperNiN(), (1, 1, 28, 28)) == [
        ("Sequential", (1, 48, 28, 28)),
        ("MaxPool2d", (1, 48, 14, 14)),
        ("Dropout", (1, 48, 14, 14)),
        ("Sequential", (1, 48, 14, 14)),
        ("MaxPool2d", (1, 48, 7, 7)),
        ("Dropout", (1, 48, 7, 7)),
        ("Sequential", (1, 10, 7, 7)),
        ("AdaptiveAvgPool2d", (1, 10, 1, 1)),
        ("Flatten", (1, 10)),
    ]


def test_paper_nin_layers_are_the_papers():
    convs = [m for m in PaperNiN().modules() if isinstance(m, nn.Conv2d)]
    got = [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs]
    assert got == [(1, 96, 5, 2), (96, 64, 1, 0), (64, 48, 1, 0),
                   (48, 128, 5, 2), (128, 96, 1, 0), (96, 48, 1, 0),
                   (48, 128, 5, 2), (128, 96, 1, 0), (96, 10, 1, 0)]
    assert count_parameters(PaperNiN()) == sum(c_in * c_out * k * k + c_out for c_in, c_out, k, _ in got)


def test_training_flops_per_image_paper_vs_224():
    paper = training_flops_per_image(PaperNiN(), 28)
    nin = training_flops_per_image(NiN(), 224)
    assert paper == pytest.approx(0.30e9, rel=0.02)
    assert nin == pytest.approx(4.51e9, rel=0.01)
    assert 14 < nin / paper < 16


@pytest.mark.parametrize("make, size", [(PaperNiN, 28), (NiN, 224)])
def test_training_flops_equal_hand_count(make, size):
    """Forward + backward = 3x each convolution's forward FLOPs, except the first conv (no input gradient)."""
    net = make()
    convs = conv_output_shapes(copy.deepcopy(net), (1, 1, size, size))
    forward = [conv_forward_flops(conv, shape) for conv, shape in convs]
    assert training_flops_per_image(net, size) == 3 * sum(forward) - forward[0]


# ---------------------------------------------------------------- block options


@pytest.mark.parametrize("kernel_1x1", [1, 3])
@pytest.mark.parametrize("num_1x1", [0, 1, 2, 3])
def test_nin_block_options(num_1x1, kernel_1x1):
    block = nin_block(3, 8, 5, 1, 2, num_1x1=num_1x1, kernel_1x1=kernel_1x1)
    convs = [m for m in block if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + num_1x1
    assert sum(isinstance(m, nn.ReLU) for m in block) == 1 + num_1x1
    assert len(block) == 2 * (1 + num_1x1)
    assert all(c.kernel_size == (kernel_1x1, kernel_1x1) for c in convs[1:])
    assert count_parameters(block) == block_params(3, 8, 5, num_1x1, kernel_1x1)
    assert block(torch.zeros(1, 3, 16, 16)).shape == (1, 8, 16, 16)  # 3x3 "1x1" layers keep the size


def test_nin_block_default_is_two_1x1_convs():
    block = nin_block(1, 96, 11, 4, 0)
    assert [type(m).__name__ for m in block] == ["Conv2d", "ReLU"] * 3
    assert block[0].stride == (4, 4) and block[0].padding == (0, 0)


@pytest.mark.parametrize("num_1x1", [0, 1, 2, 3])
def test_nin_num_1x1_parameter_counts(num_1x1):
    net = NiN(num_1x1=num_1x1)
    assert count_parameters(net) == sum(block_params(*b, num_1x1=num_1x1) for b in NIN_BLOCKS)
    assert block_shapes(net, (1, 1, 224, 224))[-1] == ("Flatten", (1, 10))


def test_nin_kernel_1x1_3_parameter_count():
    net = NiN(kernel_1x1=3)
    assert count_parameters(net) == sum(block_params(*b, kernel_1x1=3) for b in NIN_BLOCKS)
    assert block_shapes(net, (1, 1, 224, 224)) == SEED_002_SHAPES  # padding keeps every shape


@pytest.mark.parametrize("num_1x1", [0, 1, 2, 3])
def test_paper_nin_num_1x1_variants(num_1x1):
    net = PaperNiN(num_1x1=num_1x1)
    blocks = [m for m in net if isinstance(m, nn.Sequential)]
    assert [sum(isinstance(m, nn.Conv2d) for m in b) for b in blocks] == [1 + num_1x1] * 3
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("num_1x1", [1, 2, 3])
def test_linear_1x1_drops_only_the_relus_between_1x1_layers(num_1x1):
    block = nin_block(3, 8, 5, 1, 2, num_1x1=num_1x1, linear_1x1=True)
    assert [type(m).__name__ for m in block] == ["Conv2d", "ReLU"] + ["Conv2d"] * num_1x1 + ["ReLU"]
    assert count_parameters(block) == block_params(3, 8, 5, num_1x1)
    assert count_parameters(NiN(num_1x1=num_1x1, linear_1x1=True)) == count_parameters(NiN(num_1x1=num_1x1))
    assert count_parameters(PaperNiN(num_1x1=num_1x1, linear_1x1=True)) == count_parameters(
        PaperNiN(num_1x1=num_1x1))


@pytest.mark.parametrize("model", ["paper", "nin"])
def test_linear_pair_multiplied_out_is_the_one_layer_network(model):
    """Without the ReLU between them, two 1x1 layers are one: multiplying their weights out gives a network
    with the layout of num_1x1=1 (which keeps each block's last width) and the pair's outputs."""
    torch.manual_seed(0)
    pair = init_weights(build_model(model, linear_1x1=True), "kaiming").eval()
    single = multiply_out(pair)
    one_layer = build_model(model, num_1x1=1)
    assert [(k, v.shape) for k, v in single.state_dict().items()] == [
        (k, v.shape) for k, v in one_layer.state_dict().items()]
    assert str(single) == str(one_layer)
    one_layer.load_state_dict(single.state_dict())
    X = torch.randn(2, 1, DEFAULT_SIZE[model], DEFAULT_SIZE[model])
    with torch.no_grad():
        torch.testing.assert_close(one_layer.eval()(X), pair(X), rtol=1e-4, atol=1e-5)
    assert count_parameters(pair) == count_parameters(build_model(model))  # untouched: multiply_out copies


def test_product_step_gain_is_the_mean_first_order_step_of_the_product():
    """Checked against autograd: for every entry (i, j) of the product W = W2 W1, one step on W1 and W2 against
    the loss W[i, j] moves W[i, j] by -lr times that entry's gain; the mean over the entries is the formula's."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(5, 4, 1), nn.Conv2d(4, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1, bias=False))
    net = nn.Sequential(block, nn.Sequential(nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 1)))
    w1, w2 = (layer.weight[:, :, 0, 0] for layer in block[:2])

    def mean_step(first, second):
        steps = []
        for i in range(second.shape[0]):
            for j in range(first.shape[1]):
                g1, g2 = torch.autograd.grad((second @ first)[i, j], (first, second))
                steps.append((second @ g1 + g2 @ first)[i, j])
        return torch.stack(steps).mean().item()

    # the first pair only: a ReLU separates the second from the third layer, a 3x3 the last block's
    assert product_step_gains(net) == pytest.approx([mean_step(w1, w2)], rel=1e-5)
    assert product_step_gains(PaperNiN()) == product_step_gains(PaperNiN(num_1x1=1)) == []
    assert len(product_step_gains(PaperNiN(linear_1x1=True))) == 3


def test_product_bias_step_gain_is_the_mean_first_order_step_of_the_products_bias():
    """Checked against autograd: for every entry i of the product's bias b = W2 b1 + b2 (b1 not zero here), one
    step on b1, b2 and W2 against the loss b[i] moves b[i] by -lr times that entry's gain; the formula is their
    mean. A second layer without a bias (the last block's third layer) takes no part."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(5, 4, 1), nn.Conv2d(4, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1, bias=False))
    first, second = block[0], block[1]
    w2, b1, b2 = second.weight[:, :, 0, 0], first.bias, second.bias
    steps = []
    for i in range(w2.shape[0]):
        g_w2, g_b1, g_b2 = torch.autograd.grad((w2 @ b1 + b2)[i], (w2, b1, b2))
        steps.append((g_w2 @ b1 + w2 @ g_b1 + g_b2)[i])
    assert product_bias_step_gains(nn.Sequential(block)) == pytest.approx([torch.stack(steps).mean().item()], rel=1e-5)
    # at d2l_local's start the first layer's bias is zero: 1 + |W2|^2 / rows(W2), and 1 where W2 starts at zero
    torch.manual_seed(0)
    gains = product_bias_step_gains(init_weights(PaperNiN(linear_1x1=True)))
    assert len(gains) == 3 and gains[2] == 1.0 and all(1.5 < gain < 2.5 for gain in gains[:2])


def test_product_step_operators_are_the_whole_first_order_step_of_the_product():
    """Checked against autograd: for a loss <C, [W | b]> (its gradient with respect to the product [W | b] is C),
    one step on W1, b1, W2 and b2 moves [W | b] by -lr (A C + C B) to first order; the gains are its means."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(5, 4, 1), nn.Conv2d(4, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1, bias=False))
    first, second = block[0], block[1]
    nn.init.normal_(first.bias)  # b1 != 0: the bias takes part in the weights' step and they in its
    w1, b1, w2, b2 = first.weight[:, :, 0, 0], first.bias, second.weight[:, :, 0, 0], second.bias
    grad = torch.randn(3, 6)
    loss = (grad * torch.cat([w2 @ w1, (w2 @ b1 + b2)[:, None]], dim=1)).sum()
    g_w1, g_b1, g_w2, g_b2 = torch.autograd.grad(loss, (w1, b1, w2, b2))
    step = torch.cat([w2 @ g_w1 + g_w2 @ w1, (w2 @ g_b1 + g_w2 @ b1 + g_b2)[:, None]], dim=1)
    [(a, b)] = product_step_operators(nn.Sequential(block))
    torch.testing.assert_close(step, a @ grad + grad @ b)
    assert not a.requires_grad and not b.requires_grad
    net = nn.Sequential(block)
    assert product_step_gains(net) == pytest.approx([(a.trace() / 3 + b[:5, :5].trace() / 5).item()], rel=1e-5)
    assert product_bias_step_gains(net) == pytest.approx([(a.trace() / 3 + b[5, 5]).item()], rel=1e-5)
    assert len(product_step_operators(init_weights(PaperNiN(linear_1x1=True)))) == 3
    assert product_step_operators(PaperNiN()) == []


def test_copy_weights_between_networks_that_differ_in_their_relus_only():
    torch.manual_seed(0)
    pair = init_weights(PaperNiN(linear_1x1=True))
    paper = copy_weights(pair, PaperNiN())
    assert all(torch.equal(a, b) for a, b in zip(paper.parameters(), pair.parameters(), strict=True))
    for other in (PaperNiN(num_1x1=1), NiN()):
        with pytest.raises(ValueError, match="parameters differ in number or shape"):
            copy_weights(pair, other)


def test_multiply_out_leaves_layers_with_a_relu_between_alone():
    torch.manual_seed(0)
    paper = init_weights(PaperNiN(), "kaiming")
    kept = multiply_out(paper)
    assert str(kept) == str(paper)
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), paper.state_dict().values()))


def test_last_block_gradual_squeeze():
    net = NiN(last_block=(192, 48, 10))
    convs = [m for m in net[7] if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(384, 192), (192, 48), (48, 10)]
    assert block_shapes(net, (1, 1, 224, 224)) == SEED_002_SHAPES


@pytest.mark.parametrize("make", [
    lambda: nin_block(1, 8, 3, 1, 1, num_1x1=4),
    lambda: nin_block(1, 8, 3, 1, 1, num_1x1=-1),
    lambda: nin_block(1, 8, 3, 1, 1, kernel_1x1=2),
    lambda: mlpconv(1, [], 3),
    lambda: NiN(num_1x1=4),
    lambda: NiN(kernel_1x1=5),
    lambda: NiN(head="max"),
    lambda: NiN(last_block=(192, 48)),
    lambda: PaperNiN(num_1x1=4),
    lambda: PaperNiN(head="softmax"),
    lambda: PaperNiN(last_block=(10, 10, 9)),
    lambda: build_model("resnet"),
    lambda: init_weights(NiN(), "orthogonal"),
], ids=["num_1x1=4", "num_1x1=-1", "kernel_1x1=2", "no widths", "NiN num_1x1=4", "NiN kernel_1x1=5",
        "NiN head", "NiN last_block", "Paper num_1x1=4", "Paper head", "Paper last_block", "model name", "init"])
def test_invalid_options_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("make, size", [(NiN, 224), (PaperNiN, 28)])
def test_slicing_gives_the_feature_extractor(make, size):
    """``net[:-2]`` (everything before global average pooling) gives the class confidence maps."""
    net = make().eval()
    features = net[:-2]
    assert len(features) == len(net) - 2
    with torch.no_grad():
        maps = features(torch.zeros(1, 1, size, size))
    assert maps.shape[:2] == (1, 10)


def test_build_model_by_name():
    assert isinstance(build_model("nin"), NiN)
    assert isinstance(build_model("paper", num_1x1=1), PaperNiN)


# ---------------------------------------------------------------- the fully connected head


def test_fc_head_works_at_its_input_size_only():
    net = NiN(head="fc").eval()
    assert isinstance(net[-1], nn.Linear) and net[-1].in_features == 10 * 5 * 5
    assert count_parameters(net) == 1_992_166 + 250 * 10 + 10
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 224, 224)).shape == (2, 10)
        with pytest.raises(RuntimeError):
            net(torch.zeros(2, 1, 96, 96))
        small = NiN(head="fc", input_size=96).eval()
        assert small(torch.zeros(1, 1, 96, 96)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            small(torch.zeros(1, 1, 224, 224))


def test_gap_head_works_at_other_sizes():
    with torch.no_grad():
        assert NiN().eval()(torch.zeros(1, 1, 96, 96)).shape == (1, 10)


def test_paper_fc_head_works_at_28_only():
    net = PaperNiN(head="fc").eval()
    assert net[-1].in_features == 10 * 7 * 7
    with torch.no_grad():
        assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
        with pytest.raises(RuntimeError):
            net(torch.zeros(3, 1, 32, 32))


# ---------------------------------------------------------------- what the layers compute


def test_1x1_convolution_is_a_per_pixel_fully_connected_layer():
    torch.manual_seed(0)
    conv = nin_block(6, 5, 3, 1, 1)[2]  # the block's first 1x1 convolution (5 -> 5)
    assert conv.kernel_size == (1, 1)
    fc = nn.Linear(5, 5)
    with torch.no_grad():
        fc.weight.copy_(conv.weight[:, :, 0, 0])
        fc.bias.copy_(conv.bias)
        x = torch.randn(2, 5, 7, 9)
        per_pixel = fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # every pixel's channel vector
        assert torch.allclose(conv(x), per_pixel, atol=1e-6)


def test_global_average_pooling_is_the_spatial_mean():
    torch.manual_seed(0)
    head = nn.Sequential(*list(NiN())[-2:])  # AdaptiveAvgPool2d + Flatten
    x = torch.randn(3, 10, 5, 5)
    assert torch.allclose(head(x), x.mean(dim=(2, 3)), atol=1e-6)


def test_init_weights_schemes():
    net = NiN()
    init_weights(net, "kaiming")
    conv = net[0][0]
    assert torch.count_nonzero(conv.bias) == 0
    # He-normal std = sqrt(2 / fan_in), fan_in = 1 * 11 * 11
    assert conv.weight.std().item() == pytest.approx((2 / 121) ** 0.5, rel=0.1)
    init_weights(net, "xavier")
    bound = (6 / (121 + 96 * 121)) ** 0.5
    assert conv.weight.abs().max().item() <= bound
    with pytest.raises(ValueError, match="init must be one of"):
        init_weights(net, "he")


def test_fan_out_init_scales_by_each_layers_fan_out():
    """He's rule by fan-out: the first layer 96 * 121, the 384 -> 10 layer 10 * 9; last layer as d2l_local."""
    torch.manual_seed(0)
    net = init_weights(NiN(), "d2l_local_fan_out")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].weight.std().item() == pytest.approx((2 / (96 * 121)) ** 0.5, rel=0.05)
    assert convs[-3].weight.std().item() == pytest.approx((2 / (10 * 9)) ** 0.5, rel=0.05)
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs[:-1])
    assert torch.count_nonzero(convs[-1].weight) == 0 and torch.all(convs[-1].bias == 1)


@pytest.mark.parametrize("scheme, plain", [("d2l_local", 2), ("d2l_local_fan_out", 1)])
def test_he_gain_only_where_a_relu_lies_between(scheme, plain):
    """In a linear 1x1 pair the layer past the missing ReLU (the second by fan-in, the first by fan-out) gets
    gain 1; every other layer keeps He's factor of 2."""
    torch.manual_seed(0)
    block = init_weights(PaperNiN(linear_1x1=True), scheme)[0]
    convs = [m for m in block if isinstance(m, nn.Conv2d)]

    def fan(conv):
        k = conv.weight[0, 0].numel()
        return conv.in_channels * k if scheme == "d2l_local" else conv.out_channels * k

    gains = [conv.weight.var().item() * fan(conv) for conv in convs]
    expected = [2.0, 2.0, 2.0]
    expected[plain] = 1.0
    assert gains == pytest.approx(expected, rel=0.1)


def test_linear_pair_starts_with_the_scale_of_the_paper_network():
    """With gain 1 past the missing ReLU, the pair's block outputs start as large as the paper's network's."""
    X = torch.randn(64, 1, 28, 28)

    def block_rms(net):
        return [h.pow(2).mean().sqrt().item() for h in (net[0](X), net[:4](X))]

    torch.manual_seed(0)
    paper = block_rms(init_weights(PaperNiN()).eval())
    torch.manual_seed(0)
    pair = block_rms(init_weights(PaperNiN(linear_1x1=True)).eval())
    assert pair == pytest.approx(paper, rel=0.25)


@pytest.mark.parametrize("model", ["nin", "paper"])
@pytest.mark.parametrize("head", ["gap", "fc"])
@pytest.mark.parametrize("scheme", ["d2l_local", "d2l_local_fan_out"])
def test_d2l_local_init_starts_every_class_alive_and_equal(model, head, scheme):
    """Last layer: zero weights, bias 1, so every score is 1 and the loss exactly ln 10; the rest He-normal."""
    torch.manual_seed(0)
    net = init_weights(build_model(model, head=head), scheme).eval()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert torch.count_nonzero(layers[-1].weight) == 0 and torch.all(layers[-1].bias == 1)
    assert all(torch.count_nonzero(m.bias) == 0 for m in layers[:-1])
    size = DEFAULT_SIZE[model]
    scores = net(torch.randn(4, 1, size, size))
    assert torch.all(scores == 1)
    loss = nn.functional.cross_entropy(scores, torch.arange(4))
    assert loss.item() == pytest.approx(math.log(10), abs=1e-6)


# ---------------------------------------------------------------- layer_summary


@pytest.fixture(scope="module")
def nin_summary():
    return layer_summary(NiN(), (1, 1, 224, 224))


def test_layer_summary_totals_are_the_sum_of_rows(nin_summary):
    rows = nin_summary.layers
    assert nin_summary.params == sum(r.params for r in rows) == 1_992_166
    assert nin_summary.forward_flops == sum(r.forward_flops for r in rows)
    assert nin_summary.training_flops == sum(r.training_flops for r in rows)
    assert nin_summary.forward_flops > 0
    assert len(nin_summary.table()) == len(rows)


def test_layer_summary_conv_flops_match_formula(nin_summary):
    convs = conv_output_shapes(NiN(), (1, 1, 224, 224))
    rows = [r for r in nin_summary.layers if r.kind == "Conv2d"]
    assert len(rows) == len(convs) == 12
    for row, (conv, shape) in zip(rows, convs):
        assert row.output_shape == shape
        assert row.forward_flops == conv_forward_flops(conv, shape), row.name
    first = rows[0]
    # independent of the helpers above: 1 -> 96 channels, 11x11 kernel, 54x54 output
    assert first.forward_flops == 2 * 1 * 96 * 11 * 11 * 54 * 54
    assert first.params == 96 * 1 * 11 * 11 + 96


def test_layer_summary_rows_follow_block_shapes(nin_summary):
    by_name = {r.name: r for r in nin_summary.layers}
    assert by_name["1"].kind == "MaxPool2d" and by_name["1"].output_shape == (1, 96, 26, 26)
    assert by_name["9"].output_shape == (1, 10)
    assert all(r.forward_flops == 0 for r in nin_summary.layers if r.kind in ("ReLU", "Dropout", "Flatten"))
    assert nin_summary.training_activation_bytes > nin_summary.prediction_activation_bytes > 0


def test_layer_summary_training_memory_by_layer(nin_summary):
    by_name = {r.name: r for r in nin_summary.layers}
    assert nin_summary.training_activation_bytes == sum(r.saved_bytes for r in nin_summary.layers)
    fp32 = 4
    # by hand: the first convolution keeps its input image, 1x224x224 floats, for its weight gradient
    assert by_name["0.0"].saved_bytes == 224 * 224 * fp32
    # each ReLU keeps its output (the next convolution uses the same tensor: counted once, here)
    assert by_name["0.1"].saved_bytes == by_name["0.1"].output_bytes == 96 * 54 * 54 * fp32
    assert by_name["0.2"].saved_bytes == 0
    # max pooling keeps the int64 index of each output's maximum
    assert by_name["1"].saved_bytes == 96 * 26 * 26 * 8
    assert all(r.saved_bytes == 0 for r in nin_summary.layers if r.kind in ("AdaptiveAvgPool2d", "Flatten"))
    assert "saved for backward KiB" in nin_summary.table()[0]
