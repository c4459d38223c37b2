"""Does the seeds' recipe start learning? ``python -m d2l_local experiment stability``.

The seeds train the 224x224 NiN with plain SGD at lr 0.1 from d2l's Xavier
initialisation, and in d2l's own CI some of those runs never left chance
accuracy. This experiment runs the first steps of that recipe from several
seeds under every scheme of :func:`d2l_local.models.init_weights` (d2l's
Xavier initialisation, PyTorch's default, He's and d2l_local's two), and
records per window of steps the loss, the accuracy and the fraction of class
scores that are exactly zero (a class map closed by its ReLU for that
image). A run is *dead* when every class score is zero: no gradient reaches
any weight any more, so it can never learn. It is *stuck* when its accuracy
over the last window is still below ``STUCK_BELOW``; a run that is stuck but
not dead may still be starting slowly.

To show how a run that had started can fall back to chance, it also records
the largest loss of a single step in each window and, at the end, how many channels of each
ReLU layer are closed (zero for every image of a fixed probe of test images).
A closed channel passes no gradient back, so what lies below it stops learning
through it.

``python -m d2l_local experiment stability_clip`` runs the same first steps
with d2l_local's initialisation and one change to the recipe: each step's
gradient is scaled down to a bound near the typical gradient norm
(``torch.nn.utils.clip_grad_norm_``), so that no single step can be much
longer than a typical one. Two controls change the recipe in other ways:
``stability_half_lr`` halves the learning rate, and ``stability_clip_loose``
clips at a norm that only the longest steps reach. ``stability_unit_inputs``
feeds the pixels in [0, 1], as d2l does, instead of standardising them.
``experiments.STABILITY`` holds all these experiments and their changes, the
bounds included.
"""

import itertools
import json
import math
import statistics
import time

import torch

from .allocator import keep_freed_memory
from .data import load_data_fashion_mnist
from .experiments import STABILITY, results_dir
from .models import NiN, count_parameters, init_weights
from .provenance import provenance
from .space_to_depth import space_to_depth
from .train import (
    PROBE_IMAGES,
    _epoch_seed,
    closed_channels_by_layer,
    pick_precision,
    probe_images,
    quick_mode,
    train_step,
    write_json_atomic,
)

STABILITY_PRESETS = {
    "cpu": dict(steps=400, seeds=(0, 1, 2, 3, 4), window=25),
    "gpu": dict(steps=1000, seeds=tuple(range(10)), window=50),
}
QUICK = dict(steps=4, window=2)  # D2L_LOCAL_QUICK=1: a smoke test
LR, BATCH, SIZE = 0.1, 128, 224
STUCK_BELOW = 0.2  # train accuracy over the last window; chance is 0.1


def first_steps(init, seed, steps, window, loaders, device, lr=LR, clip_grad_norm=None):
    """Loss and accuracy, averaged over windows of ``window`` steps, for the first ``steps`` steps."""
    train_iter, test_iter = loaders
    probe = probe_images(test_iter)
    precision = pick_precision(device)
    torch.manual_seed(seed)
    net = init_weights(NiN(), init).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    torch.manual_seed(_epoch_seed(seed, 0))
    train_iter.set_epoch(0)
    losses, accs, zeros, grad_norms = [], [], [], []
    start = time.time()
    with space_to_depth(net, device):
        for X, y in train_iter:
            loss, logits, grad_norm = train_step(net, optimizer, scaler, X, y, device, precision,
                                                 clip_grad_norm=clip_grad_norm)
            if grad_norm is not None:
                grad_norms.append(grad_norm.float())
            losses.append(loss.float())
            accs.append((logits.argmax(1) == y).float().mean())
            zeros.append((logits == 0).float().mean())
            if len(losses) == steps:
                break
        closed = closed_channels_by_layer(net, probe, device, precision)
    losses = torch.stack(losses).cpu().tolist()
    accs = torch.stack(accs).cpu().tolist()
    zeros = torch.stack(zeros).cpu().tolist()
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    loss_curve = [mean(losses[i:i + window]) for i in range(0, steps, window)]
    acc_curve = [mean(accs[i:i + window]) for i in range(0, steps, window)]
    zero_curve = [mean(zeros[i:i + window]) for i in range(0, steps, window)]
    worst = lambda xs: max(xs, key=lambda x: x if math.isfinite(x) else math.inf)  # noqa: E731
    max_loss_curve = [worst(losses[i:i + window]) for i in range(0, steps, window)]
    clipping = {}
    if grad_norms:  # the gradient's norm before clipping, per window: median, largest, share of steps clipped
        norms = torch.stack(grad_norms).cpu().tolist()
        clipping = {"grad_norm_median_curve": [statistics.median(norms[i:i + window]) for i in range(0, steps, window)],
                    "grad_norm_max_curve": [worst(norms[i:i + window]) for i in range(0, steps, window)],
                    "clipped_fraction_curve": [mean([n > clip_grad_norm for n in norms[i:i + window]])
                                               for i in range(0, steps, window)]}
    return {
        "init": init, "seed": seed, "steps": steps, "window": window, "loss_curve": loss_curve,
        "max_loss_curve": max_loss_curve, "acc_curve": acc_curve, "zero_score_curve": zero_curve,
        "final_window_acc": acc_curve[-1],
        "stuck": acc_curve[-1] < STUCK_BELOW, "dead": zero_curve[-1] == 1.0,
        "nonfinite": not all(map(torch.isfinite, map(torch.tensor, losses))),
        "closed_channels_at_end": closed,
        "seconds": time.time() - start, "precision": precision, **clipping,
    }


def _kept_runs(path, preset, config, rerun, inits):
    """Runs of the record at ``path`` to keep when only the ``rerun`` initialisation is run again."""
    if not path.exists():
        raise ValueError(f"{path} does not exist: run the whole stability experiment first (without --only).")
    record = json.loads(path.read_text())
    if record["preset"] != preset or record["config"] != config:
        raise ValueError(f"{path} was recorded with another preset or config ({record['preset']}, "
                         f"{record['config']}); run the whole stability experiment again (without --only).")
    # A run recorded before runs carried their own provenance comes from the record's.
    return [{"provenance": record["provenance"], **run} for run in record["runs"]
            if run["init"] != rerun and run["init"] in inits]


def run_stability(name="stability", preset="cpu", seeds=None, device="cpu", only=None):
    """Run the stability experiment ``name`` of ``experiments.STABILITY``; write ``results/NAME.json``, return its path.

    ``only`` runs one of the experiment's initialisations again and keeps the other
    initialisations' runs from the existing record, which must have the same
    preset and config; each run keeps its own provenance.
    """
    if name not in STABILITY:
        raise ValueError(f"unknown stability experiment {name!r}; choose one of {list(STABILITY)}")
    change = STABILITY[name]
    inits, lr, clip = change["inits"], change.get("lr", LR), change.get("clip_grad_norm")
    standardize = change.get("standardize", True)
    config = STABILITY_PRESETS[preset] | (QUICK if quick_mode() else {})
    seeds = tuple(seeds or config["seeds"])
    if only is not None and only not in inits:
        raise ValueError(f"{name} has no initialisation {only!r}; its initialisations are {list(inits)}")
    device = torch.device(device)
    path = results_dir() / f"{name}.json"
    config = {"lr": lr, "batch_size": BATCH, "image_size": SIZE, "params": count_parameters(NiN()),
              "stuck_below": STUCK_BELOW, "probe_images": PROBE_IMAGES, **config, "seeds": list(seeds),
              **({"clip_grad_norm": clip} if clip else {}), **({} if standardize else {"standardize": False})}
    runs = _kept_runs(path, preset, config, only, inits) if only else []
    loaders = load_data_fashion_mnist(BATCH, resize=SIZE, device=device, standardize=standardize)
    recipe = (f"SGD lr {lr}, batch {BATCH}" + (f", gradient norm clipped to {clip}" if clip else "")
              + ("" if standardize else ", pixels in [0, 1] as in d2l"))
    record = {
        "experiment": name, "preset": preset, "provenance": provenance(device),
        "description": f"First steps of the seeds' recipe (224x224 NiN, {recipe}) by initialisation",
        "config": config, "complete": False, "runs": [],
    }
    order = {(init, seed): i for i, (init, seed) in enumerate(itertools.product(inits, seeds))}
    with keep_freed_memory(device):
        for init, seed in itertools.product([only] if only else inits, seeds):
            run = first_steps(init, seed, config["steps"], config["window"], loaders, device, lr, clip)
            last_block = [f"{layer['closed']}/{layer['channels']}" for layer in run["closed_channels_at_end"]
                          if layer["block"] == run["closed_channels_at_end"][-1]["block"]]
            print(f"[{name}] init={init} seed={seed}: acc over last {config['window']} steps "
                  f"{run['final_window_acc']:.3f}, zero class scores {run['zero_score_curve'][-1]:.0%}, "
                  f"closed channels in the last block {', '.join(last_block)}"
                  f"{' STUCK' if run['stuck'] else ''}{' DEAD' if run['dead'] else ''}", flush=True)
            runs.append({**run, "provenance": provenance(device)})
            record["runs"] = sorted(runs, key=lambda r: order[r["init"], r["seed"]])
            record["complete"] = {(r["init"], r["seed"]) for r in record["runs"]} >= set(order)
            write_json_atomic(path, record)  # after every run: an interrupted experiment keeps what it measured
    return path
