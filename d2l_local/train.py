"""Training: d2l's ``train_ch6`` call, made fast, checkpointed and honest about failure.

``train_ch6(net, train_iter, test_iter, num_epochs, lr, device)`` runs the
seeds' recipe (plain SGD on cross-entropy) with mixed precision where it
helps, channels_last, optional ``torch.compile``, a tqdm bar, a live plot in
notebooks, a checkpoint every epoch and exact resume. On the CPU it also keeps
freed memory for reuse (:mod:`d2l_local.allocator`), runs a strided first
convolution as a stride-1 one (:mod:`d2l_local.space_to_depth`) and fuses
ReLUs into the layers next to them (:mod:`d2l_local.relu_fusion`).

Set ``D2L_LOCAL_QUICK=1`` to turn every call into a tiny real run (one epoch on
a few hundred images), as CI does when it executes the notebooks.
"""

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .allocator import keep_freed_memory
from .data import DeviceLoader, positive_int, write_atomic
from .models import conv1x1_layers, init_weights, min_input_size
from .relu_fusion import fuse_relus
from .space_to_depth import space_to_depth

QUICK_IMAGES = 512
PROBE_IMAGES = 256  # test images on which closed channels are counted at the end of a run
# run settings newer than some checkpoints, at their defaults
CONFIG_ADDED_LATER = {"deterministic": False, "lr_1x1_scale": 1.0, "lr_1x1_bias_scale": None,
                      "precondition_1x1": None}
NAN_CHECK_EVERY = 20
# fp16's GradScaler skips each step whose gradient overflows and halves its scale (it starts at 2**16 and
# doubles only after 2000 clean steps), so a diverged run can keep a finite loss and finite weights. Below
# 1e-4 (30 halvings from the start) the gradients overflow fp16 (65504) even scaled down 10,000-fold, i.e.
# exceed about 6.5e8: no run that learns gets there.
MIN_GRAD_SCALE = 1e-4


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite, or (fp16) every step's gradient overflowed.

    ``history``: the run's :class:`History` up to the last finished epoch (set by :func:`train_ch6`).
    """

    history = None


def quick_mode():
    """True when ``D2L_LOCAL_QUICK=1``: every training call becomes a tiny real run."""
    return os.environ.get("D2L_LOCAL_QUICK", "0") not in ("", "0")


def try_gpu(i=0):
    """``cuda:i`` when that GPU exists, otherwise the CPU (as ``d2l.try_gpu``)."""
    if torch.cuda.device_count() > i:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def cpu_has_native_bf16():
    """Whether this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def pick_precision(device, precision="auto"):
    """Resolve ``"auto"`` to ``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device``.

    On a GPU: bf16 where it is native (compute capability 8.0, Ampere, and
    newer), else fp16 with a gradient scaler (Colab's T4, a V100). On the CPU:
    bf16 only where the CPU has bf16 matrix instructions (AMX or AVX512-BF16),
    fp32 elsewhere (without them oneDNN has no fast bf16 kernels).
    """
    if precision != "auto":
        if precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        # Not torch.cuda.is_bf16_supported(): it counts emulation (True on a T4), and cuDNN has no bf16
        # convolutions below 8.0. The capability is that of `device`, not of the current GPU.
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiled(net, compile):
    """``net`` under ``torch.compile``: ``compile`` is ``True`` (the default mode) or one of COMPILE_MODES."""
    mode = "default" if compile is True else compile
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}; got {compile!r}")
    return torch.compile(net, mode=mode)


@contextlib.contextmanager
def cudnn_autotune(device, enabled=True):
    """While inside, cuDNN times its convolution algorithms once per shape and keeps the fastest.

    Training sees one input shape (two with a short last batch), so the timing
    pays off after a few steps. On a CPU, or with ``enabled=False``, it does nothing.
    """
    if torch.device(device).type != "cuda" or not enabled:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def deterministic_algorithms(device, enabled=True):
    """While inside, a GPU runs only deterministic kernels, so the same seed gives the same run.

    cuDNN's deterministic convolutions without autotuning, and
    ``torch.use_deterministic_algorithms`` (warning, not failing, for an operation
    that has no deterministic kernel). On the CPU, or with ``enabled=False``, it
    does nothing: d2l_local's CPU runs are reproducible as they are.
    """
    if torch.device(device).type != "cuda" or not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


def autocast(device, precision):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


@dataclass
class History:
    """Per-epoch records of a training run, plus the run's config."""

    config: dict = field(default_factory=dict)
    epochs: list = field(default_factory=list)

    def to_json(self, path):
        write_json_atomic(path, asdict(self))

    @property
    def final(self):
        return self.epochs[-1] if self.epochs else {}

    def __repr__(self):  # short: a notebook shows it when train_ch6 is a cell's last line
        final = self.final
        if not final:
            return "History(no epochs)"
        return (f"History({len(self.epochs)} epochs: train loss {final['train_loss']:.4f}, "
                f"train acc {final['train_acc']:.4f}, test acc {final['test_acc']:.4f})")


def write_json_atomic(path, obj):
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    text = json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path, state):
    """Write ``state`` with ``torch.save``, atomically."""
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path):
    """Load a checkpoint written by :func:`train_ch6`, with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def evaluate_accuracy(net, data_iter, device=None, precision="fp32", max_images=None):
    """Fraction of correct predictions of ``net`` on ``data_iter``."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = total = 0
    with torch.no_grad(), autocast(device, precision):
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            correct += (net(X).argmax(dim=1) == y).sum()
            total += len(y)
            if max_images and total >= max_images:
                break
    net.train(was_training)
    return float(correct) / max(total, 1)


def probe_images(data_iter, count=PROBE_IMAGES):
    """The first ``count`` images of ``data_iter``: the same ones every time from a test loader."""
    batches, total = [], 0
    for X, _ in data_iter:
        batches.append(X)
        total += len(X)
        if total >= count:
            break
    return torch.cat(batches)[:count]


def closed_channels(activation):
    """How many channels of a ReLU's output (N, C, H, W) are zero for every image and position."""
    return int((activation != 0).flatten(2).any(2).any(0).logical_not().sum())  # NaN counts as open


def closed_channels_by_layer(net, probe, device, precision):
    """Closed channels of every ReLU layer of ``net`` on the ``probe`` images, in evaluation mode.

    A closed channel passes no gradient back: what lies below it stops learning through it.

    One row per layer: its NiN block, its place in the block, its width and how many channels are closed.
    """
    blocks = [module for module in net if isinstance(module, nn.Sequential)]
    layers = [(b, i, relu) for b, block in enumerate(blocks, 1)
              for i, relu in enumerate((m for m in block if isinstance(m, nn.ReLU)), 1)]
    outputs = {}

    def keep(key):
        def hook(module, inputs, output):
            outputs[key] = output
        return hook

    hooks = [relu.register_forward_hook(keep((b, i))) for b, i, relu in layers]
    was_training = net.training
    try:
        with torch.no_grad(), autocast(device, precision):
            net.eval()(probe)
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return [{"block": b, "layer": i, "channels": outputs[b, i].shape[1], "closed": closed_channels(outputs[b, i])}
            for b, i, _ in layers]


def zero_scores_by_class(net, probe, device, precision):
    """For each class, the fraction of the ``probe`` images on which ``net`` (in evaluation mode) scores it
    exactly zero.

    Behind a ReLU and global average pooling, a zero score means the class map
    is closed for that image, so that image passes its class no gradient.
    """
    was_training = net.training
    try:
        with torch.no_grad(), autocast(device, precision):
            scores = net.eval()(probe)
    finally:
        net.train(was_training)
    return (scores == 0).float().mean(0).tolist()


def evaluate_accuracy_gpu(net, data_iter, device=None):
    """``d2l``'s name and call for :func:`evaluate_accuracy` (any device, not only a GPU)."""
    return evaluate_accuracy(net, data_iter, device)


def train_step(model, optimizer, scaler, X, y, device, precision, label_smoothing=0.0, clip_grad_norm=None):
    """One SGD step under mixed precision; returns the (detached) loss, the logits and the gradient norm.

    ``clip_grad_norm``: if given, scale the gradient down to at most this norm
    (over all parameters together) before the step. The returned norm is the
    gradient's before clipping, or ``None`` when there is no clipping.
    """
    with autocast(device, precision):
        logits = model(X)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = None
    if clip_grad_norm is not None:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach(), grad_norm


def _epoch_seed(seed, epoch):
    return seed * 1_000_003 + epoch + 1


def _check_input_size(net, data_iter, device):
    """Run one of the loader's images through ``net``; say so when they are smaller than it accepts."""
    if not isinstance(data_iter, DeviceLoader):
        return
    X = data_iter.preprocess(data_iter.images[:1]).to(device)  # the loader's own channels and size
    try:
        with torch.no_grad():
            net.eval()(X)
    except RuntimeError as err:
        try:
            side = min_input_size(net, in_channels=X.shape[1])
        except ValueError:  # no size fits (other channels, a fixed input size...): not a resize problem
            side = 0
        size = X.shape[-1]
        if size >= side:
            raise  # the network's own error, unchanged
        raise ValueError(f"{size}x{size} images do not fit {type(net).__name__}: the smallest input it accepts "
                         f"is {side}x{side}. Choose resize accordingly (the seeds use 224). ({err})") from None
    finally:
        net.train()


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device=None, *, seed=0, init="d2l_local",
              precision="auto", momentum=0.0, weight_decay=0.0, schedule="constant", label_smoothing=0.0,
              clip_grad_norm=None, lr_1x1_scale=1.0, lr_1x1_bias_scale=None, precondition_1x1=None,
              compile=False, deterministic=False, checkpoint=None, resume=False, history_path=None, progress=True,
              plot=None):
    """Train ``net`` with SGD and cross-entropy; same positional call as ``d2l.train_ch6``.

    Defaults are the seeds' recipe: plain SGD at ``lr``, no momentum or
    weight decay, constant learning rate. Returns a :class:`History`.

    Args:
        init: a scheme of :func:`~d2l_local.models.init_weights`: ``"d2l_local"``
            (default), ``"d2l_local_fan_out"``, ``"kaiming"``, ``"xavier"`` (what d2l does) or
            ``"default"`` (PyTorch's); ``None`` keeps the weights ``net`` comes with.
        precision: ``"auto"`` (see :func:`pick_precision`), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        schedule: ``"constant"`` or ``"cosine"`` (per step, to zero).
        clip_grad_norm: scale each step's gradient down to at most this norm
            (``torch.nn.utils.clip_grad_norm_``); ``None`` (the seeds' recipe) never clips.
        lr_1x1_scale: the learning rate of the 1x1 convolutions (weights and biases) times
            this factor, or times one factor per 1x1 convolution in forward order (see :func:`sgd`).
        lr_1x1_bias_scale: factors of the same form for the 1x1 convolutions' biases alone;
            ``None`` (the default) scales them with their weights.
        precondition_1x1: per 1x1 convolution, ``None`` or the pair of matrices ``(A, B)``
            that turn its gradient ``G`` into ``A G + G B`` before every step (see :func:`sgd`).
        compile: wrap the network in ``torch.compile``: ``True`` for its default
            mode, or a mode name (``"max-autotune"``, ``"reduce-overhead"``...).
        deterministic: on a GPU, deterministic kernels only (see
            :func:`deterministic_algorithms`): the same seed gives the same run, more
            slowly. By default a GPU picks its fastest convolutions
            (:func:`cudnn_autotune`), which may differ from run to run. CPU runs are
            reproducible either way.
        checkpoint: path of a checkpoint written after every epoch.
        resume: continue from ``checkpoint`` if it exists; the result is the
            same as a run that was never interrupted.
        history_path: also write the history there as JSON after every epoch.
        plot: live loss/accuracy plot; default on inside notebooks.
    """
    if not positive_int(num_epochs):
        raise ValueError(f"num_epochs must be an int, at least 1; got {num_epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive (or None: no clipping), got {clip_grad_norm}")
    device = torch.device(device or try_gpu())
    precision = pick_precision(device, precision)
    quick = quick_mode()
    max_images = QUICK_IMAGES if quick else None
    if quick:
        num_epochs = 1
        print(f"[d2l_local] QUICK MODE (D2L_LOCAL_QUICK=1): 1 epoch on {QUICK_IMAGES} images; "
              "the numbers below are a smoke test, not a result.")
    config = dict(epochs=num_epochs, lr=lr, seed=seed, init=init, precision=precision, momentum=momentum,
                  weight_decay=weight_decay, schedule=schedule, label_smoothing=label_smoothing,
                  clip_grad_norm=clip_grad_norm, deterministic=deterministic,
                  batch_size=getattr(train_iter, "batch_size", None),
                  image_size=getattr(train_iter, "image_size", None),
                  device=str(device), quick=quick,
                  lr_1x1_scale=lr_1x1_scale if isinstance(lr_1x1_scale, (int, float)) else list(lr_1x1_scale),
                  lr_1x1_bias_scale=lr_1x1_bias_scale if isinstance(lr_1x1_bias_scale, (int, float, type(None)))
                  else list(lr_1x1_bias_scale),
                  # a digest per preconditioned layer: a resumed run must use the same matrices
                  precondition_1x1=None if precondition_1x1 is None else [None if pair is None else _digest(pair)
                                                                          for pair in precondition_1x1])

    torch.manual_seed(seed)
    if init is not None:
        init_weights(net, init)
    net.to(device).to(memory_format=torch.channels_last)
    # after the move (torch.optim)
    optimizer = sgd(net, lr, momentum, weight_decay, lr_1x1_scale, lr_1x1_bias_scale, precondition_1x1)
    _check_input_size(net, train_iter, device)
    model = compiled(net, compile) if compile else fuse_relus(net, device)
    steps_per_epoch = len(train_iter) if max_images is None else math.ceil(max_images / train_iter.batch_size)
    scheduler = None
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_epochs * steps_per_epoch)
    elif schedule != "constant":
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history = History(config)

    if resume and checkpoint and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        # A constant-rate run may be extended; a scheduled one depends on its length.
        free = {"epochs"} if schedule == "constant" else set()

        def comparable(cfg):
            # The device's type only: "cuda" and try_gpu()'s "cuda:0" are the same GPU, and an index
            # names a slot, not the hardware (resuming on the CPU stays bitwise exact).
            return {k: torch.device(v).type if k == "device" else v for k, v in cfg.items() if k not in free}

        # A checkpoint from before a setting existed ran with its default.
        saved, mine = comparable(CONFIG_ADDED_LATER | state["config"]), comparable(config)
        if saved != mine:
            raise ValueError(f"checkpoint {checkpoint} was written by a different run: {saved} vs {mine}. "
                             "Use another checkpoint path, or the same settings.")
        done = len(state["history"])
        if done > num_epochs:
            raise ValueError(f"checkpoint {checkpoint} already holds {done} epochs, more than num_epochs={num_epochs}. "
                             f"Pass num_epochs={done} (or more) to continue it, use another checkpoint path, "
                             "or read it with load_checkpoint.")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history.epochs = state["history"]
        print(f"[d2l_local] resumed from {checkpoint} after epoch {len(history.epochs)}")

    animator = _live_plot(num_epochs) if (plot if plot is not None else _in_notebook()) else None
    if animator:
        for record in history.epochs:
            animator.add(record)

    with (_history_on_divergence(history), keep_freed_memory(device), cudnn_autotune(device, not deterministic),
          deterministic_algorithms(device, deterministic), space_to_depth(net, device)):
        for epoch in range(len(history.epochs), num_epochs):
            torch.manual_seed(_epoch_seed(seed, epoch))
            if hasattr(train_iter, "set_epoch"):
                train_iter.set_epoch(epoch)
            net.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            start = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{num_epochs}", disable=not progress,
                       leave=False)
            for step, (X, y) in enumerate(train_iter):
                X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss, logits, _ = train_step(model, optimizer, scaler, X, y, device, precision, label_smoothing,
                                             clip_grad_norm)
                if scheduler:
                    scheduler.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(dim=1) == y).sum()
                seen += len(y)
                bar.update()
                if (step + 1) % NAN_CHECK_EVERY == 0 or step + 1 == steps_per_epoch:
                    _check_diverged(loss_sum, net, scaler, epoch, step, lr)
                if max_images and seen >= max_images:
                    break
            _check_diverged(loss_sum, net, scaler, epoch, step, lr)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            bar.close()
            record = dict(epoch=epoch + 1, train_loss=loss_sum.item() / seen, train_acc=correct.item() / seen,
                          test_acc=evaluate_accuracy(model, test_iter, device, precision, max_images),
                          img_per_s=seen / seconds, seconds=seconds)
            history.epochs.append(record)
            if not quick:
                _warn_if_at_chance(history.epochs, logits.shape[1], lr, clip_grad_norm)
            if checkpoint:
                save_checkpoint(checkpoint, dict(model=net.state_dict(), optimizer=optimizer.state_dict(),
                                                 scheduler=scheduler.state_dict() if scheduler else {},
                                                 scaler=scaler.state_dict(), history=history.epochs, config=config))
            if history_path:
                history.to_json(history_path)
            if animator:
                animator.add(record)
            if progress:
                print(f"epoch {record['epoch']}: loss {record['train_loss']:.3f}, train acc {record['train_acc']:.3f}, "
                      f"test acc {record['test_acc']:.3f}, {record['img_per_s']:.1f} examples/sec on {device}")
    return history


def sgd(net, lr, momentum=0.0, weight_decay=0.0, lr_1x1_scale=1.0, lr_1x1_bias_scale=None,
        precondition_1x1=None):
    """``torch.optim.SGD`` over ``net``'s parameters, its 1x1 convolutions at ``lr`` times ``lr_1x1_scale``.

    ``lr_1x1_scale`` is one factor for every 1x1 convolution or a sequence of
    one factor per 1x1 convolution, in forward order. ``lr_1x1_bias_scale``
    (the same forms) gives their biases factors of their own; ``None`` scales
    each bias as its layer's weights. At 1 (the default) all parameters are
    one group, as in d2l.

    ``precondition_1x1``: one entry per 1x1 convolution, ``None`` or a pair of
    matrices ``(A, B)``. Before every step, that layer's gradient, its weights
    and bias as one matrix ``G = [W | b]``, becomes ``A G + G B``: the step of
    the pair of 1x1 layers whose product the layer holds
    (:func:`~d2l_local.models.product_step_operators`), with ``A`` and ``B``
    fixed. The layer's learning rate factor applies on top.
    """
    layers = conv1x1_layers(net)
    scales = _per_layer(lr_1x1_scale, layers, "lr_1x1_scale")
    bias_scales = scales if lr_1x1_bias_scale is None else _per_layer(lr_1x1_bias_scale, layers, "lr_1x1_bias_scale")
    if all(s == 1 for s in scales + bias_scales):
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        scaled = {p for layer in layers for p in layer.parameters()}
        groups = [{"params": [p for p in net.parameters() if p not in scaled]}]
        for layer, scale, bias_scale in zip(layers, scales, bias_scales):
            if scale == bias_scale or layer.bias is None:
                groups.append({"params": list(layer.parameters()), "lr": lr * scale})
            else:
                groups += [{"params": [layer.weight], "lr": lr * scale},
                           {"params": [layer.bias], "lr": lr * bias_scale}]
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if precondition_1x1 is not None:
        preconditioned = _preconditioned_layers(layers, precondition_1x1)

        def precondition(*_):
            for each in preconditioned:
                _precondition(*each)

        optimizer.register_step_pre_hook(precondition)
    return optimizer


def _preconditioned_layers(layers, operators):
    """``(layer, A, B)`` for each 1x1 convolution that ``operators`` gives a pair of matrices of the right size."""
    if len(operators) != len(layers):
        raise ValueError(f"precondition_1x1 needs one entry per 1x1 convolution ({len(layers)}), got {len(operators)}")
    preconditioned = []
    for i, (layer, pair) in enumerate(zip(layers, operators), 1):
        if pair is None:
            continue
        a, b = (m.to(layer.weight.device, torch.float32) for m in pair)
        columns = layer.in_channels + (layer.bias is not None)
        if a.shape != (layer.out_channels,) * 2 or b.shape != (columns,) * 2:
            raise ValueError(f"precondition_1x1: 1x1 convolution {i} ({layer.in_channels} -> {layer.out_channels} "
                             f"channels) needs A {layer.out_channels}x{layer.out_channels} and B {columns}x{columns}, "
                             f"got {tuple(a.shape)} and {tuple(b.shape)}")
        preconditioned.append((layer, a, b))
    return preconditioned


@torch.no_grad()
def _precondition(layer, a, b):
    """``layer``'s gradient ``G = [W | b]`` becomes ``A G + G B`` (no gradient yet: nothing to do)."""
    parts = [p for p in (layer.weight, layer.bias) if p is not None]
    if any(p.grad is None for p in parts):
        return
    grad = torch.cat([parts[0].grad.reshape(layer.out_channels, -1)] + [p.grad[:, None] for p in parts[1:]], dim=1)
    grad = a @ grad + grad @ b
    layer.weight.grad.copy_(grad[:, :layer.in_channels].reshape(layer.weight.grad.shape))
    if layer.bias is not None:
        layer.bias.grad.copy_(grad[:, -1])


def _digest(tensors):
    """A short digest of some tensors' values (float32 on the CPU)."""
    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _per_layer(factors, layers, name):
    """``factors`` (one positive number, or one per layer) as a list with one factor per layer."""
    scales = [factors] * len(layers) if isinstance(factors, (int, float)) else list(factors)
    if len(scales) != len(layers) or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
        raise ValueError(f"{name} must be a positive number or {len(layers)} positive numbers, one per 1x1 "
                         f"convolution of the network; got {factors!r}")
    return scales


@contextlib.contextmanager
def _history_on_divergence(history):
    """Hand the epochs finished so far to a :class:`TrainingDiverged` raised inside."""
    try:
        yield
    except TrainingDiverged as err:
        err.history = history
        raise


def _check_diverged(loss_sum, net, scaler, epoch, step, lr):
    # The weights too: a fused ReLU (relu_fusion) turns NaN into 0, so NaN weights need not reach the loss.
    finite = torch.stack([torch.isfinite(loss_sum).all(), *(p.detach().isfinite().all() for p in net.parameters())])
    if not finite.all().item():
        what = "the loss or the weights became NaN or infinite"
    elif (scale := scaler.get_scale()) < MIN_GRAD_SCALE:  # get_scale() is 1.0 without fp16
        what = f"the fp16 gradients overflowed step after step, so every step was skipped (gradient scale {scale:.1e})"
    else:
        return
    raise TrainingDiverged(
        f"{what} in epoch {epoch + 1} (by step {step + 1}); the run was stopped. "
        f"The learning rate {lr} is probably too large for this network and initialisation: "
        f"try a smaller one (e.g. {lr / 10:g}). Checkpoints of finished epochs are untouched.")


def chance_level(num_classes):
    """Accuracy below which a run counts as at chance: 1.5 times a uniform guess."""
    return 1.5 / num_classes


def _warn_if_at_chance(epochs, num_classes, lr, clip_grad_norm=None):
    """Warn when the first epoch ends at chance, or a later one falls back to it (a collapse).

    An epoch is at chance when its train and its test accuracy both are: the train accuracy is the mean
    over the epoch (dropout on), low for a run that starts learning late in it.
    """
    level = chance_level(num_classes)

    def at_chance(record):
        return record["train_acc"] < level and record["test_acc"] < level

    record = epochs[-1]
    if not at_chance(record):
        return
    if record["epoch"] == 1:
        warnings.warn(
            f"accuracy is still at chance after the first epoch (train {record['train_acc']:.3f}, "
            f"test {record['test_acc']:.3f}): the network has not started learning. "
            "Try init='d2l_local' (the default) or a smaller learning rate.", stacklevel=3)
    elif not at_chance(epochs[-2]):
        best = max(epochs[:-1], key=lambda r: r["train_acc"])
        warnings.warn(
            f"the run collapsed: train accuracy fell back to chance in epoch {record['epoch']} "
            f"({record['train_acc']:.3f}) after {best['train_acc']:.3f} in epoch {best['epoch']}; "
            f"SGD at lr {lr} threw away what the network had learnt. "
            f"Train again with a smaller learning rate (e.g. {lr / 2:g})"
            + ("." if clip_grad_norm else ", or with the gradient clipped (clip_grad_norm=2: no run collapsed "
                                          "that way in results/stability_clip.json)."), stacklevel=3)


def _in_notebook():
    # isinstance, not the class name: Colab's shell (google.colab._shell.Shell) is a subclass.
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:  # plain Python (the command line): no need to import ipykernel
        return False
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:
        return False
    return isinstance(shell, ZMQInteractiveShell)


def _live_plot(num_epochs):
    from .plot import TrainingPlot

    return TrainingPlot(num_epochs)


def run_info():
    """One line saying where and how this notebook runs: device, precision and mode."""
    device = try_gpu()
    from .provenance import device_name

    mode = ("QUICK MODE (D2L_LOCAL_QUICK=1): tiny runs, numbers are not results" if quick_mode()
            else "full run")
    return (f"device: {device} ({device_name(device)}), precision: {pick_precision(device)}, "
            f"torch {torch.__version__}, mode: {mode}")
