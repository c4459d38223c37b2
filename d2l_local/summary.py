"""Per-layer cost of a network: output shape, parameters, FLOPs and activation memory.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add
counts as two FLOPs); activation memory is measured from the tensors autograd
saves for the backward pass, each counted once, at the layer that saved it
first. Nothing here is written out by hand.
"""

import copy
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerCost:
    """One row of :func:`layer_summary`."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    forward_flops: int
    training_flops: int
    output_bytes: int
    saved_bytes: int = 0


@dataclass
class NetworkCost:
    """Totals for one input batch, plus the per-layer rows."""

    layers: list = field(default_factory=list)
    params: int = 0
    forward_flops: int = 0
    training_flops: int = 0
    prediction_activation_bytes: int = 0
    training_activation_bytes: int = 0

    def table(self):
        """The rows as a list of dicts (``pandas.DataFrame(cost.table())`` shows it)."""
        return [
            {"layer": r.name, "type": r.kind, "output shape": "x".join(map(str, r.output_shape)),
             "params": r.params, "forward MFLOPs": r.forward_flops / 1e6,
             "training MFLOPs": r.training_flops / 1e6, "output KiB": r.output_bytes / 1024,
             "saved for backward KiB": r.saved_bytes / 1024}
            for r in self.layers
        ]


def _leaf_layers(net):
    return [(name, m) for name, m in net.named_modules() if name and not list(m.children())]


def _flops_by_module(counter, name):
    return sum(counter.get_flop_counts().get(name, {}).values())


def layer_summary(net, input_shape=(1, 1, 224, 224), device="cpu"):
    """Measure ``net`` on one random batch of ``input_shape``.

    ``forward_flops`` is a prediction pass; ``training_flops`` is forward plus
    backward with respect to the weights. ``prediction_activation_bytes`` is the
    largest input + output pair any layer holds at once;
    ``training_activation_bytes`` is everything autograd keeps for backward, and
    a layer's ``saved_bytes`` the part of it that layer saved first (a ReLU's
    output, which the next convolution saves too, counts at the ReLU).
    It measures a copy of ``net`` on ``device``: the network itself keeps its
    device, mode and gradients.
    """
    net = copy.deepcopy(net).to(device)  # not net.to(device), which moves the caller's network
    leaves = _leaf_layers(net)
    outputs = {}
    for name, m in leaves:
        m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, (inp[0], out)))
    x = torch.randn(input_shape, device=device)
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as forward_counter:
        net(x)
    prediction_bytes = max(i.nbytes + o.nbytes for i, o in outputs.values())

    net.train()
    saved = {}  # (storage, dtype) -> (the layer that saved it first, bytes)
    running = [None]
    for name, m in leaves:
        m.register_forward_pre_hook(lambda mod, inp, name=name: running.__setitem__(0, name))

    def pack(t):
        saved.setdefault((t.untyped_storage().data_ptr(), t.dtype), (running[0], t.untyped_storage().nbytes()))
        return t

    with FlopCounterMode(display=False) as training_counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = net(x).float().sum()
        loss.backward()

    params_of = {name: sum(p.numel() for p in m.parameters()) for name, m in leaves}
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved_by = {}
    for (ptr, _), (name, nbytes) in saved.items():
        if ptr not in weights:
            saved_by[name] = saved_by.get(name, 0) + nbytes
    prefix = type(net).__name__
    rows = [
        LayerCost(name, type(m).__name__, tuple(outputs[name][1].shape), params_of[name],
                  _flops_by_module(forward_counter, f"{prefix}.{name}"),
                  _flops_by_module(training_counter, f"{prefix}.{name}"), outputs[name][1].nbytes,
                  saved_by.get(name, 0))
        for name, m in leaves if name in outputs
    ]
    return NetworkCost(rows, sum(p.numel() for p in net.parameters()),
                       forward_counter.get_total_flops(), training_counter.get_total_flops(),
                       prediction_bytes, sum(saved_by.values()))


def block_shapes(net, input_shape=(1, 1, 224, 224)):
    """``(class name, output shape)`` after each top-level layer, as the seeds print them."""
    x = torch.randn(input_shape, device=next(net.parameters(), torch.empty(0)).device)  # where the network is
    rows = []
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for layer in net:
            x = layer(x)
            rows.append((layer.__class__.__name__, tuple(x.shape)))
    net.train(was_training)
    return rows


def training_flops_per_image(net, input_size, in_channels=1):
    """Forward + backward FLOPs for one image (measured on a batch of 2, halved)."""
    return layer_summary(net, (2, in_channels, input_size, input_size)).training_flops // 2


__all__ = ["LayerCost", "NetworkCost", "layer_summary", "block_shapes", "training_flops_per_image"]
