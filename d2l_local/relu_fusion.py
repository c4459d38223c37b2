"""Two exact rewrites of a network's ReLUs for training on the CPU.

A CPU training step of the 224x224 NiN spends about a third of its time not in
convolutions but in passes over activations: ReLU forward and backward and max
pooling, each reading and writing tens of MB. :func:`fuse_relus` removes some
of those passes without changing a single finite number:

1. **ReLU before max pooling moves after it.** ReLU is monotone, so
   ``max_pool(relu(x)) == relu(max_pool(x))``, and the gradients agree too (both
   reach the window's first maximum when it is positive, and nothing when it is
   not). At the end of each NiN block the ReLU then works on the pooled map,
   about a quarter of the size.
2. **A ReLU right after a convolution runs inside it**, as a oneDNN
   post-operation (the fused kernel PyTorch's own compiler uses on the CPU), so
   the convolution's output is written once, already rectified. Only under
   bf16 autocast, where PyTorch's own convolution runs in oneDNN too: in fp32
   it does not always (on one thread of an AMD EPYC, a 96 -> 10 channel 1x1
   convolution gave other sums than oneDNN's), so there the layers run as they are.

The result is a ``torch.fx`` copy of the network's forward pass that calls
the same modules and parameters; the network itself is left as it is.
Only networks built from ``torch.nn`` layers in ``nn.Sequential`` containers
are rewritten: a tracer would freeze a hand-written ``forward``'s Python side
effects (a step counter, say). Modules with hooks are not rewritten, so hooks
still see what they expect. Unlike ``torch.relu``, the fused kernel turns NaN
into 0, which is why :func:`~d2l_local.train_ch6` watches the weights as well
as the loss for a diverging run.
The logits and gradients are bitwise the same in the channels_last layout
d2l_local trains in (``tests/test_relu_fusion.py``); ``python -m d2l_local
bench --json`` times a training step with and without the rewrites, side by
side, and prints the ratio as ``relu_fusion_speedup``.
"""

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import space_to_depth

HAS_FUSED_CONV = hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.backends.mkldnn.is_available()


class _Conv2dReLU(torch.autograd.Function):
    """``relu(conv2d(x))`` in one oneDNN kernel; backward as autograd would do it."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        out = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation, groups,
                                                      "relu", [], "")
        ctx.save_for_backward(x, weight, out)
        ctx.conv = stride, padding, dilation, groups
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, out = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        grad = torch.ops.aten.threshold_backward(grad, out, 0)  # ReLU's backward
        grads = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]], stride, padding, dilation, False, [0, 0], groups,
            list(ctx.needs_input_grad[:3]))
        return (*grads, None, None, None, None)


def conv2d_relu(x, weight, bias, stride, padding, dilation, groups):
    """``F.relu(F.conv2d(...))``: one fused kernel under bf16 autocast (cast as ``F.conv2d`` would be),
    otherwise the two layers as they are (see the module's docstring)."""
    if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return F.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))
    x, weight = x.to(torch.bfloat16), weight.to(torch.bfloat16)
    bias = bias.to(torch.bfloat16) if bias is not None else None
    with torch.autocast("cpu", enabled=False):
        return _Conv2dReLU.apply(x, weight, bias, list(stride), list(padding), list(dilation), groups)


def space_to_depth_relu(x, weight, bias, stride, padding):
    """``F.relu(conv2d_space_to_depth(...))``, its stride-1 convolution fused with the ReLU."""
    return space_to_depth.conv2d_space_to_depth(x, weight, bias, stride, padding,
                                                conv2d=lambda *args: conv2d_relu(*args, (1, 1), (0, 0), (1, 1), 1))


def _hooked(module):
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _module(graph_module, node, kind):
    """The module ``node`` calls if it is an un-hooked instance of ``kind``, else None."""
    if node.op != "call_module":
        return None
    module = graph_module.get_submodule(node.target)
    return module if type(module) is kind and not _hooked(module) else None


def _pool_before_relu(graph_module):
    for relu in list(graph_module.graph.nodes):
        if not _module(graph_module, relu, nn.ReLU) or len(relu.users) != 1:
            continue
        (pool,) = relu.users
        pooling = _module(graph_module, pool, nn.MaxPool2d)
        if pooling and not pooling.return_indices:
            pool.replace_input_with(relu, relu.args[0])
            pool.replace_all_uses_with(relu)
            relu.args = (pool,)
            pool.append(relu)  # relu now runs right after pool


def _fuse_conv_relu(graph_module):
    graph = graph_module.graph
    for conv_node in list(graph.nodes):
        conv = _module(graph_module, conv_node, nn.Conv2d)
        if (conv is None or len(conv_node.users) != 1 or conv.padding_mode != "zeros"
                or isinstance(conv.padding, str)):
            continue
        (relu,) = conv_node.users
        if not _module(graph_module, relu, nn.ReLU):
            continue
        with graph.inserting_before(relu):
            params = [graph.get_attr(f"{conv_node.target}.{name}") if getattr(conv, name) is not None else None
                      for name in ("weight", "bias")]
            if space_to_depth._eligible(conv):
                fused = graph.call_function(space_to_depth_relu, (conv_node.args[0], *params, conv.stride[0],
                                                                  conv.padding[0]))
            else:
                fused = graph.call_function(conv2d_relu, (conv_node.args[0], *params, conv.stride, conv.padding,
                                                          conv.dilation, conv.groups))
        relu.replace_all_uses_with(fused)
        graph.erase_node(relu)
        graph.erase_node(conv_node)


def _plain_layers(net):
    """True if every module of ``net`` is a ``torch.nn`` layer or runs ``nn.Sequential``'s forward."""
    return all(type(m).forward is nn.Sequential.forward or type(m).__module__.startswith("torch.nn.")
               for m in net.modules())


def fuse_relus(net, device):
    """``net``'s forward pass with both rewrites when training on the CPU, else ``net`` itself.

    The returned module shares ``net``'s modules and parameters: train it,
    and save, load and evaluate ``net`` as usual. Networks with a forward of
    their own (anything but ``torch.nn`` layers in ``nn.Sequential``) are
    returned unchanged.
    """
    if torch.device(device).type != "cpu" or not HAS_FUSED_CONV or not _plain_layers(net):
        return net
    graph_module = fx.symbolic_trace(net)
    _pool_before_relu(graph_module)
    _fuse_conv_relu(graph_module)
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module
