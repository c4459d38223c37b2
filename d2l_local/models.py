"""Network in Network (Lin, Chen and Yan, 2013) and the pieces it is built from.

Two networks live here:

* :class:`NiN` is the network of the d2l book and of the seeds: four mlpconv
  blocks for 224x224 Fashion-MNIST, 1,992,166 parameters.
* :class:`PaperNiN` is the paper's own MNIST network for 28x28 inputs. It runs
  Fashion-MNIST at its native resolution, about 15 times cheaper, so it is the
  network the CPU-sized experiments use.

Both are ``nn.Sequential`` subclasses, so ``for layer in net: X = layer(X)``
walks them block by block, exactly as the seeds do.
"""

import copy
from collections import OrderedDict

import torch
from torch import nn

HEADS = ("gap", "fc")


class _Network(nn.Sequential):
    """``nn.Sequential`` whose slices are plain ``nn.Sequential`` (``net[:-2]`` is the body)."""

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)


def mlpconv(in_channels, widths, kernel_size, strides=1, padding=0, *, kernel_1x1=1, linear_1x1=False):
    """An mlpconv layer: one ``kernel_size`` convolution followed by 1x1 convolutions.

    ``widths[0]`` is the output width of the spatial convolution and each
    further entry adds one "1x1" convolution of that width; every convolution is
    followed by a ReLU. ``kernel_1x1=3`` turns the 1x1 layers into 3x3 layers
    (padding 1) for the exercise that asks what the 1x1 shape buys.
    ``linear_1x1=True`` drops the ReLUs between the 1x1 layers (the one after
    the last stays), so that together they compute one linear map per pixel:
    the parameters of several layers, the functions of one.
    """
    if not widths:
        raise ValueError("mlpconv needs at least one width (the spatial convolution's)")
    if kernel_1x1 not in (1, 3):
        raise ValueError(f"kernel_1x1 must be 1 or 3, got {kernel_1x1}")
    layers = [nn.Conv2d(in_channels, widths[0], kernel_size, strides, padding), nn.ReLU()]
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:]), start=2):
        layers.append(nn.Conv2d(c_in, c_out, kernel_1x1, padding=kernel_1x1 // 2))
        if not linear_1x1 or i == len(widths):
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def nin_block(in_channels, out_channels, kernel_size, strides, padding, *, num_1x1=2, kernel_1x1=1,
              linear_1x1=False):
    """The NiN block of the d2l book: a convolution, then ``num_1x1`` 1x1 convolutions.

    Same positional signature as ``d2l``'s ``nin_block``. ``num_1x1`` (0 to 3,
    default 2 as in the paper), ``kernel_1x1`` (1 or 3) and ``linear_1x1``
    (see :func:`mlpconv`) serve the exercises.
    """
    if num_1x1 not in range(4):
        raise ValueError(f"num_1x1 must be 0, 1, 2 or 3, got {num_1x1}")
    return mlpconv(in_channels, [out_channels] * (1 + num_1x1), kernel_size, strides, padding,
                   kernel_1x1=kernel_1x1, linear_1x1=linear_1x1)


def _head(head, num_classes, feature_shape):
    """Global average pooling, or flatten + a fully connected layer over ``feature_shape``."""
    if head == "gap":
        return [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()]
    if head == "fc":
        channels, height, width = feature_shape
        return [nn.Flatten(), nn.Linear(channels * height * width, num_classes)]
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")


def _last_widths(widths, num_classes):
    widths = list(widths)
    if not widths or widths[-1] != num_classes:
        raise ValueError(f"last_block must end with num_classes={num_classes}, got {widths}")
    return widths


def _feature_shape(layers, in_channels, input_size):
    """Output shape (C, H, W) of ``layers`` for one input, computed on the meta device."""
    probe = copy.deepcopy(nn.Sequential(*layers)).to("meta")
    return tuple(probe(torch.empty(1, in_channels, input_size, input_size, device="meta")).shape[1:])


class NiN(_Network):
    """The d2l/seed NiN for 224x224 inputs (1,992,166 parameters with the defaults).

    Args:
        num_classes: number of output classes (and channels of the last block).
        in_channels: channels of the input images (1 for Fashion-MNIST).
        head: ``"gap"`` (global average pooling, the NiN way) or ``"fc"``
            (flatten + one fully connected layer, for the exercise).
        num_1x1: 1x1 convolutions per block, 0 to 3.
        kernel_1x1: 1, or 3 to replace the 1x1 convolutions by 3x3 ones.
        linear_1x1: drop the ReLUs between the 1x1 layers of every block
            (see :func:`mlpconv`).
        last_block: widths of the last block's layers, ending in ``num_classes``.
            ``None`` keeps the seeds' one-step squeeze: the 3x3 convolution
            goes straight from 384 to ``num_classes`` channels. ``(192, 48, 10)``
            squeezes gradually instead.
        input_size: input side length; only the ``"fc"`` head depends on it.
        dropout: dropout probability before the last block.
    """

    def __init__(self, num_classes=10, in_channels=1, *, head="gap", num_1x1=2, kernel_1x1=1,
                 linear_1x1=False, last_block=None, input_size=224, dropout=0.5):
        block = dict(num_1x1=num_1x1, kernel_1x1=kernel_1x1, linear_1x1=linear_1x1)
        if last_block is None:
            last = nin_block(384, num_classes, 3, 1, 1, **block)
        else:
            last = mlpconv(384, _last_widths(last_block, num_classes), 3, 1, 1, kernel_1x1=kernel_1x1,
                           linear_1x1=linear_1x1)
        body = [
            nin_block(in_channels, 96, 11, 4, 0, **block),
            nn.MaxPool2d(3, stride=2),
            nin_block(96, 256, 5, 1, 2, **block),
            nn.MaxPool2d(3, stride=2),
            nin_block(256, 384, 3, 1, 1, **block),
            nn.MaxPool2d(3, stride=2),
            nn.Dropout(dropout),
            last,
        ]
        shape = _feature_shape(body, in_channels, input_size) if head == "fc" else None
        super().__init__(*body, *_head(head, num_classes, shape))


class PaperNiN(_Network):
    """The NiN paper's own MNIST network, for 28x28 inputs.

    Three mlpconv layers with 5x5 convolutions: 96-64-48, 128-96-48 and
    128-96-10, 3x3/2 max pooling (ceil mode, so 28 -> 14 -> 7) and dropout
    after the first two, then global average pooling over the 7x7 maps.

    ``num_1x1`` changes the number of 1x1 layers in every block: 2 is the
    paper; 1 keeps only the block's last 1x1 layer; 3 repeats the first one;
    0 keeps the spatial convolution alone (the last block's then outputs
    ``num_classes`` maps). ``last_block`` replaces the last block's widths
    (the paper's are 128-96-10; ``(10, 10, 10)`` squeezes in one step as the
    seeds' network does). ``kernel_1x1``, ``linear_1x1``, ``head`` and
    ``input_size`` are as in :class:`NiN`.
    """

    BLOCKS = ((96, 64, 48), (128, 96, 48), (128, 96, None))  # None: num_classes

    def __init__(self, num_classes=10, in_channels=1, *, head="gap", num_1x1=2, kernel_1x1=1,
                 linear_1x1=False, last_block=None, input_size=28, dropout=0.5):
        if num_1x1 not in range(4):
            raise ValueError(f"num_1x1 must be 0, 1, 2 or 3, got {num_1x1}")
        body, c_in = [], in_channels
        for i, (conv, hidden, out) in enumerate(self.BLOCKS):
            is_last = i == len(self.BLOCKS) - 1
            out = num_classes if out is None else out
            widths = [conv] + [hidden] * (num_1x1 - 1) + [out] if num_1x1 else [out if is_last else conv]
            if is_last and last_block is not None:
                widths = _last_widths(last_block, num_classes)
            body.append(mlpconv(c_in, widths, 5, 1, 2, kernel_1x1=kernel_1x1, linear_1x1=linear_1x1))
            if not is_last:
                body += [nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.Dropout(dropout)]
            c_in = widths[-1]
        shape = _feature_shape(body, in_channels, input_size) if head == "fc" else None
        super().__init__(*body, *_head(head, num_classes, shape))


MODELS = {"nin": NiN, "paper": PaperNiN}
DEFAULT_SIZE = {"nin": 224, "paper": 28}


def build_model(name, **options):
    """Build a model from :data:`MODELS` by name (``"nin"`` or ``"paper"``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**options)


INITS = ("d2l_local", "d2l_local_fan_out", "kaiming", "xavier", "default")


def init_weights(net, scheme="d2l_local"):
    """Initialise every convolution and linear layer of ``net`` in place; return ``net``.

    ``"d2l_local"`` (the default): He-normal weights and zero biases, which
    keep the signal's scale through all the ReLU layers, except for the last
    layer, which starts with zero weights and bias 1. Every class map then
    starts alive and equal (all scores 1, the loss exactly ln 10), so no class
    begins behind a closed ReLU, the trap in which some runs of the seeds'
    recipe stay at chance (``python -m d2l_local experiment stability``).
    ``"d2l_local_fan_out"``: as ``"d2l_local"``, but He's rule scaled by each
    layer's fan-out (torchvision's choice for ResNet), which keeps the scale of
    the gradients rather than of the signal: thin layers start with larger
    weights (the 384 -> 10 convolution 6 times larger) and the first layer with
    smaller ones.
    ``"kaiming"``: He-normal weights and zero biases everywhere.
    ``"xavier"``: what ``d2l.train_ch6`` does: Xavier-uniform weights, PyTorch's biases.
    ``"default"``: PyTorch's own initialisation, untouched.

    He's factor of 2 makes up for the ReLU that halves the signal's mean square
    on the way into a layer (by fan-in; on the way back out of it, by fan-out).
    Where two weighted layers follow each other with no ReLU between them
    (``linear_1x1=True``), the layer on the far side of that missing ReLU gets
    gain 1 instead, so the signal keeps its scale there too; no other network
    here has such a pair, and their weights are drawn as before.
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}")
    if scheme == "default":
        return net
    weighted = (nn.Conv2d, nn.Linear)
    leaves = [m for m in net.modules() if not list(m.children())]  # in forward order: nn.Sequential networks
    layers = [m for m in leaves if isinstance(m, weighted)]
    mode = "fan_out" if scheme == "d2l_local_fan_out" else "fan_in"
    for i, module in enumerate(leaves):
        if not isinstance(module, weighted):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(module.weight)
        else:
            j = i - 1 if mode == "fan_in" else i + 1  # what feeds this layer (fan-in), or what it feeds (fan-out)
            no_relu_between = 0 <= j < len(leaves) and isinstance(leaves[j], weighted)
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="linear" if no_relu_between else "relu")
            nn.init.zeros_(module.bias)
    if scheme.startswith("d2l_local") and layers:
        nn.init.zeros_(layers[-1].weight)
        nn.init.ones_(layers[-1].bias)
    return net


def _is_1x1(layer):
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1)


def first_conv(net):
    """The first convolution of ``net`` in forward order (the spatial one that reads the image)."""
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d))


def nin_blocks(net):
    """The NiN blocks of ``net``, in forward order."""
    return [m for m in net if isinstance(m, nn.Sequential)]


def last_block(net):
    """The last NiN block of ``net``: the one that makes the class maps."""
    return nin_blocks(net)[-1]


def conv1x1_layers(net):
    """The 1x1 convolutions of ``net``, in forward order."""
    return [m for m in net.modules() if _is_1x1(m)]


def product_step_gains(net):
    """For each pair of 1x1 convolutions that follow each other directly: how much farther than one layer their
    product moves in a step of gradient descent from the current weights, averaged over directions.

    A step of learning rate ``lr`` on both ``W1`` and ``W2`` changes their
    product ``W = W2 W1`` by ``-lr (W2 W2^T G + G W1^T W1)`` to first order,
    where ``G`` is the gradient with respect to ``W``; one layer holding ``W``
    moves by ``-lr G``. The mean eigenvalue of ``G -> W2 W2^T G + G W1^T W1`` is
    ``|W2|^2 / rows(W2) + |W1|^2 / columns(W1)`` (squared Frobenius norms),
    returned here pair by pair, in forward order. The gain is not the same in
    every direction, and it changes as the weights change.
    """
    gains = []
    for first, second in _consecutive_1x1_pairs(net):
        w1, w2 = first.weight[:, :, 0, 0], second.weight[:, :, 0, 0]
        gains.append((w2.square().sum() / w2.shape[0] + w1.square().sum() / w1.shape[1]).item())
    return gains


def product_bias_step_gains(net):
    """As :func:`product_step_gains`, for the bias of the product: ``b = W2 b1 + b2``.

    A step on ``b1``, ``b2`` and ``W2`` changes ``b`` by ``-lr (1 + |b1|^2 +
    W2 W2^T) g`` to first order, where ``g`` is the gradient with respect to
    ``b`` (leaving out the part that comes from the weights' gradient, which
    vanishes while ``b1`` is zero, as at the start); one layer's bias moves by
    ``-lr g``. Returned pair by pair: the mean eigenvalue, ``1 + |b1|^2 +
    |W2|^2 / rows(W2)``.
    """
    gains = []
    for first, second in _consecutive_1x1_pairs(net):
        w2 = second.weight[:, :, 0, 0]
        b1 = first.bias if first.bias is not None else w2.new_zeros(w2.shape[1])
        gains.append((1 + b1.square().sum() + w2.square().sum() / w2.shape[0]).item())
    return gains


def product_step_operators(net):
    """For each pair of 1x1 convolutions that follow each other directly: the whole first-order step of their
    product, direction by direction, as a pair of matrices ``(A, B)``.

    Write the product's weights and bias as one matrix ``[W | b] = W2_ [W1 b1;
    0 1]`` with ``W2_ = [W2 | b2]``. A step of learning rate ``lr`` on both
    layers changes it by ``-lr (A G + G B)`` to first order, where ``G`` is the
    gradient with respect to ``[W | b]``, ``A = W2 W2^T`` and ``B = [W1 b1; 0
    1]^T [W1 b1; 0 1]``; one layer holding ``[W | b]`` moves by ``-lr G``.
    :func:`product_step_gains` and :func:`product_bias_step_gains` average this
    step over directions; here it is whole. Detached copies, in forward order.
    """
    operators = []
    for first, second in _consecutive_1x1_pairs(net):
        w1, w2 = first.weight.detach()[:, :, 0, 0], second.weight.detach()[:, :, 0, 0]
        b1 = first.bias.detach() if first.bias is not None else w1.new_zeros(w1.shape[0])
        lower = torch.cat([w1, b1[:, None]], dim=1)  # [W1 b1; 0 1] without its last row, which adds e e^T
        last = w1.new_zeros(w1.shape[1] + 1)
        last[-1] = 1
        operators.append((w2 @ w2.T, lower.T @ lower + torch.outer(last, last)))
    return operators


def _consecutive_1x1_pairs(net):
    """Each pair of 1x1 convolutions of ``net`` that follow each other directly, in forward order."""
    for block in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for first, second in zip(block, list(block)[1:]):
            if _is_1x1(first) and _is_1x1(second):
                yield first, second


def multiply_out(net):
    """A copy of ``net`` in which 1x1 convolutions that follow each other directly are one 1x1 convolution.

    With nothing between them, two such layers compute ``W2 (W1 x + b1) + b2 =
    (W2 W1) x + (W2 b1 + b2)`` at every pixel, which one layer computes as
    well: the copy computes the same function (up to rounding) with fewer
    parameters. A ``linear_1x1=True`` network becomes one with the layout and
    the parameters of ``num_1x1=1``; a network with a ReLU between all its
    layers comes back unchanged.
    """
    net = copy.deepcopy(net)
    for block in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        layers = []
        for layer in block:
            if layers and _is_1x1(layers[-1]) and _is_1x1(layer):
                first = layers[-1]
                merged = nn.Conv2d(first.in_channels, layer.out_channels, 1, bias=True,
                                   device=first.weight.device, dtype=first.weight.dtype)
                w1, w2 = first.weight[:, :, 0, 0], layer.weight[:, :, 0, 0]
                b1, b2 = (c.bias if c.bias is not None else c.weight.new_zeros(c.out_channels) for c in (first, layer))
                with torch.no_grad():
                    merged.weight.copy_((w2 @ w1)[:, :, None, None])
                    merged.bias.copy_(w2 @ b1 + b2)
                layers[-1] = merged
            else:
                layers.append(layer)
        if len(layers) < len(block):
            block._modules = OrderedDict((str(i), layer) for i, layer in enumerate(layers))
    return net


def copy_weights(source, net):
    """Copy ``source``'s parameters into ``net``'s, one by one in order; return ``net``.

    The two networks may differ in layers without parameters: the paper's
    pair of 1x1 layers takes the weights of a ``linear_1x1=True`` pair this way.
    """
    sources, targets = list(source.parameters()), list(net.parameters())
    if len(sources) != len(targets) or any(a.shape != b.shape for a, b in zip(sources, targets)):
        raise ValueError(f"cannot copy the weights of {type(source).__name__} into {type(net).__name__}: their "
                         "parameters differ in number or shape")
    with torch.no_grad():
        for a, b in zip(sources, targets):
            b.copy_(a)
    return net


def count_parameters(net):
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def min_input_size(net, in_channels=1, limit=1024):
    """Smallest square input side that ``net`` accepts, found on the meta device."""
    probe = copy.deepcopy(net).to("meta").eval()

    def fits(size):
        try:
            probe(torch.empty(1, in_channels, size, size, device="meta"))
            return True
        except RuntimeError:
            return False

    if not fits(limit):
        raise ValueError(f"the network accepts no input up to {limit}x{limit}")
    low, high = 1, limit
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid + 1, high)
    return low
