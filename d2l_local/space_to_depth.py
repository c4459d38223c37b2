"""Strided convolutions over few channels, computed as stride-1 ones (space-to-depth).

The first convolution of the seeds' NiN (1 -> 96 channels, 11x11, stride 4) is
the slowest layer of a CPU training step: oneDNN's AMX kernels work on blocks
of input channels, and one channel leaves them idle (the weight gradient alone
took 54 ms of a 540 ms step). Cutting the image into 4x4 tiles and stacking
each tile's 16 pixels as channels (``F.pixel_unshuffle``) turns that layer into
a stride-1 3x3 convolution over 16 channels, whose kernel is the 11x11 kernel
zero-padded to 12x12 and cut the same way. The sums are the same; the layer's
forward and backward together ran about 2.5 times faster here.

:func:`space_to_depth` switches a network's eligible convolutions to this
computation while training on the CPU; the network itself (its modules,
parameters and state dict) is left as it is.
"""

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

MAX_IN_CHANNELS = 3  # image inputs; wider layers already fill oneDNN's channel blocks


def conv2d_space_to_depth(x, weight, bias, stride, padding, conv2d=F.conv2d):
    """``F.conv2d(x, weight, bias, stride, padding)`` for a square kernel and stride.

    The result is channels_last, the layout d2l_local trains in. ``conv2d``
    computes the stride-1 convolution (``conv2d(tiles, weight, bias)``).
    """
    if torch.is_autocast_enabled(x.device.type) and x.dtype == torch.float32:  # cast as the convolution would,
        x = x.to(torch.get_autocast_dtype(x.device.type))  # before the copies below: they move half the bytes
    out_ch, in_ch, k, _ = weight.shape
    taps = -(-k // stride)  # kernel side in tiles
    weight = F.pad(weight, (0, taps * stride - k, 0, taps * stride - k))
    weight = (weight.reshape(out_ch, in_ch, taps, stride, taps, stride)
              .permute(0, 1, 3, 5, 2, 4)  # channel order of pixel_unshuffle: (in_ch, row, col)
              .reshape(out_ch, in_ch * stride * stride, taps, taps))
    height, width = x.shape[-2:]
    out_h = (height + 2 * padding - k) // stride + 1
    out_w = (width + 2 * padding - k) // stride + 1
    # pad (or crop) so that the tiled input gives exactly out_h x out_w outputs
    x = F.pad(x, (padding, stride * (out_w + taps - 1) - width - padding,
                  padding, stride * (out_h + taps - 1) - height - padding))
    # F.pixel_unshuffle(x, stride), written straight into channels_last (one copy instead of two)
    n, c, h, w = x.shape
    tiles = (x.reshape(n, c, h // stride, stride, w // stride, stride).permute(0, 2, 4, 1, 3, 5)
             .reshape(n, h // stride, w // stride, c * stride * stride).permute(0, 3, 1, 2))
    return conv2d(tiles, weight, bias)


def _eligible(module):
    return (type(module) is nn.Conv2d and module.in_channels <= MAX_IN_CHANNELS and module.groups == 1
            and module.padding_mode == "zeros" and module.dilation == (1, 1)
            and len(set(module.stride)) == 1 and module.stride[0] > 1
            and len(set(module.kernel_size)) == 1 and isinstance(module.padding, tuple)
            and len(set(module.padding)) == 1)


def _forward(conv, x):
    return conv2d_space_to_depth(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0])


@contextlib.contextmanager
def space_to_depth(net, device):
    """While inside, ``net``'s strided convolutions over at most 3 channels use
    :func:`conv2d_space_to_depth` when ``device`` is the CPU (measured faster
    there; on a GPU cuDNN runs them as they are)."""
    convs = [m for m in net.modules() if _eligible(m)] if torch.device(device).type == "cpu" else []
    for conv in convs:
        conv.forward = functools.partial(_forward, conv)  # shadows nn.Conv2d.forward
    try:
        yield net
    finally:
        for conv in convs:
            del conv.forward
