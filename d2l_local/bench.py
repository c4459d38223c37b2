"""``python -m d2l_local bench``: d2l_local against the seeds' own pipeline, side by side.

Both pipelines train the same network (the 224x224 NiN, batch 128, SGD lr
0.1) in the same process on the same device, for the same number of steps
after a warm-up:

(a) the seeds' pipeline: ``d2l.load_data_fashion_mnist(128, resize=224)``
    (torchvision, PIL resizing in DataLoader workers) and the step of
    ``d2l.train_ch6`` (fp32);
(b) d2l_local: the data set on the device as uint8, resizing there, mixed
    precision and channels_last, the step of :func:`d2l_local.train_ch6`.

On the CPU it also times (b) without :mod:`d2l_local.relu_fusion`, so
``relu_fusion_speedup`` shows what those rewrites are worth on this machine,
and (b) in fp32, so ``mixed_precision_speedup`` shows whether the bf16 that
:func:`~d2l_local.train.pick_precision` chose from the CPU's instructions is
faster here; on a GPU, (b) without cuDNN's algorithm timing
(``cudnn_autotune_speedup``).

The peak is the best throughput of square matrix multiplies, measured in the
same run at the precision d2l_local used, so ``fraction_of_peak`` compares like
with like.
"""

import contextlib
import os
import time
import warnings

import torch
from torch import nn

from .allocator import keep_freed_memory
from .data import cache_dir, load_data_fashion_mnist, place_for_torchvision
from .models import NiN, init_weights
from .provenance import device_name
from .relu_fusion import HAS_FUSED_CONV, fuse_relus
from .space_to_depth import space_to_depth
from .summary import training_flops_per_image
from .train import compiled, cudnn_autotune, pick_precision, quick_mode, train_step

BATCH, SIZE, LR = 128, 224, 0.1


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_steps(step, batches, warmup, steps, device):
    """Images per second over ``steps`` calls of ``step`` after ``warmup`` calls."""
    batches = iter(batches)
    for _ in range(warmup):
        step(*next(batches))
    _sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(steps):
        X, y = next(batches)
        step(X, y)
        images += len(y)
    _sync(device)
    return images / (time.perf_counter() - start)


@contextlib.contextmanager
def _inside(folder):
    """Run with ``folder`` as the working directory (d2l reads ``../data``)."""
    previous = os.getcwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def reference_img_per_s(device, warmup, steps):
    """The seeds' code path: d2l's data loader and d2l.train_ch6's step, in fp32."""
    from d2l import torch as d2l

    workdir = cache_dir().parent / "d2l-reference" / "work"
    place_for_torchvision(workdir.parent / "data")
    with _inside(workdir), warnings.catch_warnings():
        # d2l asks for 4 loader workers whatever the machine; torch warns on 2 cores
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        train_iter, _ = d2l.load_data_fashion_mnist(BATCH, resize=SIZE)
        net = NiN()
        init_weights(net, "xavier")
        net.to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=LR)
        loss = nn.CrossEntropyLoss()

        def step(X, y):
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            batch_loss = loss(y_hat, y)
            batch_loss.backward()
            optimizer.step()
            with torch.no_grad():
                d2l.accuracy(y_hat, y)

        return _timed_steps(step, train_iter, warmup, steps, device)


def d2l_local_img_per_s(device, warmup, steps, precision, compile=False, fuse=True, autotune=True):
    train_iter, _ = load_data_fashion_mnist(BATCH, resize=SIZE, device=device)
    net = init_weights(NiN(), "d2l_local").to(device).to(memory_format=torch.channels_last)
    model = compiled(net, compile) if compile else fuse_relus(net, device) if fuse else net
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(X, y):
        train_step(model, optimizer, scaler, X, y, device, precision)

    with space_to_depth(net, device), cudnn_autotune(device, autotune):
        return _timed_steps(step, train_iter, warmup, steps, device)


def matmul_peak_tflops(device, precision, sizes=(2048, 4096, 8192), trials=3, min_seconds=0.2):
    """The best matrix-multiply throughput at ``precision`` over ``sizes`` and ``trials``, in TFLOP/s.

    The operands are created in the precision's dtype, so the peak times the
    multiply alone (under autocast, fp32 operands would be cast on every call).
    Each trial repeats the multiply for at least ``min_seconds``.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b  # warm-up
        for _ in range(trials):
            _sync(device)
            start, repeats = time.perf_counter(), 0
            while repeats == 0 or time.perf_counter() - start < min_seconds:
                a @ b
                repeats += 1
                _sync(device)
            best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12)
    return best


# Timed steps and warm-up steps per device type: on a GPU a step takes milliseconds, so 12 would time noise
# (on an H200, 100 steps of d2l_local took about 0.6 s).
STEPS = {"cpu": (12, 3), "cuda": (100, 20)}


def run_bench(device, steps=None, warmup=None, compile=False):
    """Measure both pipelines and the matmul peak; return one flat dict.

    ``steps`` and ``warmup`` default to ``STEPS`` for the device's type.
    """
    device = torch.device(device)
    default_steps, default_warmup = STEPS.get(device.type, STEPS["cpu"])
    steps = default_steps if steps is None else steps
    warmup = default_warmup if warmup is None else warmup
    if steps < 1 or warmup < 0:
        raise ValueError(f"bench needs at least 1 timed step and no negative warm-up, got steps={steps}, "
                         f"warmup={warmup}")
    if quick_mode():
        steps, warmup = 2, 1
    precision = pick_precision(device)
    flops_per_image = training_flops_per_image(NiN(), SIZE)
    reference = reference_img_per_s(device, warmup, steps)
    fuses = device.type == "cpu" and HAS_FUSED_CONV and not compile
    with keep_freed_memory(device):  # part of d2l_local's training loop on the CPU
        ours = d2l_local_img_per_s(device, warmup, steps, precision, compile)
        unfused = d2l_local_img_per_s(device, warmup, steps, precision, fuse=False) if fuses else None
        untuned = (d2l_local_img_per_s(device, warmup, steps, precision, compile, autotune=False)
                   if device.type == "cuda" else None)
        fp32 = (d2l_local_img_per_s(device, warmup, steps, "fp32", compile)
                if device.type == "cpu" and precision != "fp32" else None)
        peak = matmul_peak_tflops(device, precision)
    achieved = ours * flops_per_image / 1e12
    return {
        "device": device_name(device),
        "precision": precision,
        "compile": compile,
        "model": "NiN 224x224, batch 128",
        "steps": steps,
        "warmup": warmup,
        "reference_img_per_s": round(reference, 2),
        "d2l_local_img_per_s": round(ours, 2),
        "speedup": round(ours / reference, 3),
        "d2l_local_unfused_img_per_s": round(unfused, 2) if unfused else None,
        "relu_fusion_speedup": round(ours / unfused, 3) if unfused else None,
        "d2l_local_untuned_img_per_s": round(untuned, 2) if untuned else None,
        "cudnn_autotune_speedup": round(ours / untuned, 3) if untuned else None,
        "d2l_local_fp32_img_per_s": round(fp32, 2) if fp32 else None,
        "mixed_precision_speedup": round(ours / fp32, 3) if fp32 else None,
        "training_gflop_per_image": round(flops_per_image / 1e9, 3),
        "achieved_tflops": round(achieved, 4),
        "peak_tflops": round(peak, 4),
        "fraction_of_peak": round(achieved / peak, 3),
        "torch": torch.__version__,
        "quick": quick_mode(),
    }
