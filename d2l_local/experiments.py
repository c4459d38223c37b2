"""Recorded experiments: ``python -m d2l_local experiment NAME --preset cpu|gpu``.

Each experiment trains a few variants of NiN from several seeds and writes
``results/NAME.json``: provenance, the preset's config, and for every run its
variant, seed, parameters, FLOPs, per-epoch history and final accuracy. The
chapters read these files; no number in the book is typed by hand.

Presets:

* ``cpu``: the paper's 28x28 NiN on the full Fashion-MNIST set, sized for a
  2-core machine: 2 epochs of SGD with momentum 0.9 at lr 0.01 (at lr 0.02
  some seeds start slowly; measured with the first 200 steps).
* ``gpu``: the seeds' 224x224 NiN and the seeds' recipe (plain SGD, lr 0.1,
  batch 128, 10 epochs). Over all ten epochs that recipe diverged or collapsed
  in most runs of ``full_run_stability`` on a GPU, so the ablations of this
  preset will hold failed runs; clipping at norm 2 (what chapter 4 does on a
  GPU) learned in every run there. Whether the preset itself should clip is
  left open: its recorded variant ``preset`` is the unclipped recipe.

A run identical in preset, variant and seed is trained once and kept in
``results/runs/``, so experiments that share a baseline share its runs; each
run records its own provenance. ``fresh=True`` (``--fresh``, what ``make
reproduce`` uses) trains every run again and replaces the kept ones.
"""

import hashlib
import inspect
import json
import os
import time
from pathlib import Path

import torch

from .data import load_data_fashion_mnist
from .models import (
    DEFAULT_SIZE,
    INITS,
    MODELS,
    build_model,
    copy_weights,
    count_parameters,
    first_conv,
    init_weights,
    last_block,
    multiply_out,
    nin_blocks,
    product_bias_step_gains,
    product_step_gains,
    product_step_operators,
)
from .provenance import REPO, provenance, results_root
from .summary import training_flops_per_image
from .train import (
    QUICK_IMAGES,
    TrainingDiverged,
    closed_channels_by_layer,
    evaluate_accuracy,
    load_checkpoint,
    probe_images,
    quick_mode,
    train_ch6,
    write_json_atomic,
    zero_scores_by_class,
)


def results_dir():
    """``results/`` of the repository, or ``$D2L_LOCAL_RESULTS`` when set.

    Quick-mode runs are smoke tests, not results: they may only be written to
    a folder named by ``$D2L_LOCAL_RESULTS``.
    """
    if quick_mode() and not os.environ.get("D2L_LOCAL_RESULTS"):
        raise ValueError("D2L_LOCAL_QUICK=1 runs are smoke tests and never overwrite results/; "
                         "set D2L_LOCAL_RESULTS=/some/tmp/dir to try an experiment in quick mode.")
    return results_root()

PRESETS = {
    "cpu": dict(model="paper", epochs=2, batch_size=128, lr=0.01, momentum=0.9, weight_decay=0.0,
                schedule="constant", init="d2l_local", seeds=(0, 1, 2)),
    "gpu": dict(model="nin", epochs=10, batch_size=128, lr=0.1, momentum=0.0, weight_decay=0.0,
                schedule="constant", init="d2l_local", seeds=(0, 1, 2)),
}
# The book's central question gets more seeds than the preset's three where it is cheap enough; its short
# budget gets ten (with five, the second 1x1 layer's gain of about one point was within the seed spread).
SEEDS_FOR = {("cpu", "conv1x1_count"): tuple(range(10)), ("cpu", "conv1x1_count_long"): (0, 1, 2, 3),
             ("cpu", "linear_1x1"): (0, 1, 2, 3, 4), ("cpu", "linear_1x1_long"): (0, 1, 2, 3),
             ("cpu", "linear_1x1_lr"): (0, 1, 2, 3, 4), ("cpu", "linear_1x1_paced"): (0, 1, 2, 3, 4),
             ("cpu", "linear_1x1_paced_long"): (0, 1, 2, 3),
             ("cpu", "linear_1x1_matrix"): (0, 1, 2, 3, 4), ("cpu", "linear_1x1_matrix_long"): (0, 1, 2, 3),
             ("cpu", "linear_1x1_matrix_seeds"): (5, 6, 7, 8, 9),
             ("cpu", "conv1x1_count_long_seeds"): tuple(range(4, 12)), ("cpu", "conv1x1_count_stall"): (6, 7)}
# Experiments defined by the seeds they train from (more seeds for a comparison, or a look at particular seeds):
# they run on a preset only where SEEDS_FOR names their seeds for it, or where --seeds does.
BY_SEEDS = {"conv1x1_count_long_seeds", "linear_1x1_matrix_seeds", "conv1x1_count_stall"}
# What results.py reads from every run; a kept run without one of them is trained again.
RUN_KEYS = {"final_test_acc", "final_train_acc_eval", "params", "training_flops_per_image", "history"}
RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "init", "label_smoothing")
# Recipe keys that draw a part of the network's start from another seed, and the part each one draws;
# "init_seed" draws all of it.
START_PARTS = {"first_conv_seed": first_conv, "second_block_seed": lambda net: nin_blocks(net)[1],
               "last_block_seed": last_block}
DRAW_KEYS = ("init_seed", *START_PARTS)


def _conv1x1_counts(**recipe):
    return [(f"num_1x1={k}", {"num_1x1": k}, recipe) for k in range(4)]


def _relu_between(**recipe):
    """One 1x1 layer, the paper's two, and the two without the ReLU between them; then two networks that start
    from the same seed's linear pair: one layer with the pair's weights multiplied out (the pair's start and set
    of functions, written with one layer's weights), and the paper's pair with the linear pair's weights as
    they are (the same start but for the ReLU). Last, one layer from the pair's start whose 1x1 layers also
    learn as fast as the pair's products start to (``product_step_gains``): a learning-rate control."""
    start = {**recipe, "start": "linear_1x1"}
    return [("num_1x1=1", {"num_1x1": 1}, recipe), ("num_1x1=2", {}, recipe),
            ("linear_1x1=True", {"linear_1x1": True}, recipe),
            ("num_1x1=1, start=linear_1x1", {"num_1x1": 1}, start), ("num_1x1=2, start=linear_1x1", {}, start),
            ("num_1x1=1, start=linear_1x1, lr_1x1=linear_1x1", {"num_1x1": 1}, {**start, "lr_1x1": "linear_1x1"})]


def _paced_blocks(num_blocks, **recipe):
    """The linear pair, and one 1x1 layer per block from its start: at the preset's pace, at the pair's starting
    pace in every block (``linear_1x1``'s control), in every block but the last, and in the last (the class
    maps) only; then, in every block and in the last only, with each bias at the pace of the pair's product's
    bias (``product_bias_step_gains``: 1 in the last block, whose second layer starts at zero) instead of its
    weights' pace."""
    start = {**recipe, "start": "linear_1x1"}
    paced = {**start, "lr_1x1": "linear_1x1"}
    bias = {**paced, "lr_1x1_bias": "linear_1x1"}
    last = {"lr_1x1_blocks": (num_blocks,)}
    label, pace = "num_1x1=1, start=linear_1x1", "num_1x1=1, start=linear_1x1, lr_1x1=linear_1x1"
    one_layer = [(label, start), (pace, paced),
                 (f"{pace}, lr_1x1_blocks=1-{num_blocks - 1}", paced | {"lr_1x1_blocks": tuple(range(1, num_blocks))}),
                 (f"{pace}, lr_1x1_blocks={num_blocks}", paced | last),
                 (f"{pace}, lr_1x1_bias=linear_1x1", bias),
                 (f"{pace}, lr_1x1_bias=linear_1x1, lr_1x1_blocks={num_blocks}", bias | last)]
    return [("linear_1x1=True", {"linear_1x1": True}, recipe)] + [(name, {"num_1x1": 1}, changes)
                                                                  for name, changes in one_layer]


def _matrix_steps(num_blocks, **recipe):
    """The linear pair; one 1x1 layer per block from its start at the preset's pace, and at the pair's starting
    pace in every block and in all but the last (``_paced_blocks``' runs); then one layer from the pair's start
    that takes the pair's whole starting step, direction by direction (``product_step_operators``, fixed), in every
    block, in all but the last, and in the last only."""
    paced = _paced_blocks(num_blocks, **recipe)[:4]
    _, options, matrix = paced[2]
    matrix = matrix | {"lr_1x1": "linear_1x1_matrix"}
    label = "num_1x1=1, start=linear_1x1, lr_1x1=linear_1x1_matrix"
    return paced + [(label, options, matrix),
                    (f"{label}, lr_1x1_blocks=1-{num_blocks - 1}",
                     options, matrix | {"lr_1x1_blocks": tuple(range(1, num_blocks))}),
                    (f"{label}, lr_1x1_blocks={num_blocks}", options, matrix | {"lr_1x1_blocks": (num_blocks,)})]


def _stall_draws(seeds, three_layer_seeds):
    """One and two 1x1 layers per block as they are, then with all their initial weights drawn from each of
    ``seeds``, with only their first convolution's, their second block's, or their last block's (the run's own
    seed drives its dropout); last, three layers as they are and with all their initial weights drawn from each of
    ``three_layer_seeds``."""
    return [(f"num_1x1={k}{label}", {"num_1x1": k}, changes) for k in (1, 2)
            for label, changes in [("", {}), *((f", {key}={seed}", {key: seed})
                                               for key in DRAW_KEYS for seed in seeds)]] + [
        (f"num_1x1=3{label}", {"num_1x1": 3}, changes)
        for label, changes in [("", {}), *((f", init_seed={seed}", {"init_seed": seed}) for seed in three_layer_seeds)]]


def _learning_rates(lr):
    """One 1x1 layer per block and the linear pair at half, once and twice the preset's learning rate (at the
    preset's rate, the same runs as ``linear_1x1``'s)."""
    return [(label if rate == lr else f"{label}, lr={rate:g}", options, {} if rate == lr else {"lr": rate})
            for rate in (lr / 2, lr, 2 * lr)
            for label, options in (("num_1x1=1", {"num_1x1": 1}), ("linear_1x1=True", {"linear_1x1": True}))]


def _recipe_changes(lr):
    """The preset's recipe for its whole run, with its gradient clipped (norm 2), with half its lr, and with
    the pixels in [0, 1] as d2l feeds them (d2l_local standardises them)."""
    return [("preset", {}, {}), ("clip_grad_norm=2", {}, {"clip_grad_norm": 2.0}), ("half_lr", {}, {"lr": lr / 2}),
            ("standardize=False", {}, {"standardize": False})]


# name -> (description, [(variant label, model options, recipe overrides)])
EXPERIMENTS = {
    "conv1x1_count": ("Number of 1x1 convolutions per block (0 to 3)", _conv1x1_counts()),
    # The same question with a longer budget: does a deeper micro network need more epochs to pay off?
    "conv1x1_count_long": ("Number of 1x1 convolutions per block (0 to 3), 10 epochs with a cosine schedule",
                           _conv1x1_counts(epochs=10, schedule="cosine")),
    # One and two layers from eight more seeds, to pool with conv1x1_count_long's four (results.pool).
    "conv1x1_count_long_seeds": ("One and two 1x1 convolutions per block, 10 epochs with a cosine schedule, from eight "
                                 "more seeds", _conv1x1_counts(epochs=10, schedule="cosine")[1:3]),
    # Seed 7 stalls one and two layers under both budgets, seed 6 neither: is it seed 7's initial weights (all of
    # them, the first convolution's, the same draw in every count, the second block's, or the last block's, which
    # makes the class maps) or its dropout? And do three layers, which stalled from seeds 8 and 9, stall from those
    # seeds' weights with seed 6's or 7's dropout?
    "conv1x1_count_stall": ("One and two 1x1 convolutions per block from seeds 6 and 7, with all their initial "
                            "weights, or only their first convolution's, second block's or last block's, drawn from "
                            "seed 6 or 7; three with all their initial weights drawn from seed 8 or 9",
                            _stall_draws((6, 7), (8, 9))),
    # Is it the second layer's ReLU? Without it the pair computes only what one layer can, with two layers'
    # parameters.
    "linear_1x1": ("Two 1x1 layers per block with and without the ReLU between them, against one",
                   _relu_between()),
    "linear_1x1_long": ("Two 1x1 layers per block with and without the ReLU between them, against one, 10 epochs "
                        "with a cosine schedule", _relu_between(epochs=10, schedule="cosine")),
    # Is the pair's lead a matter of this one learning rate?
    "linear_1x1_lr": ("One 1x1 layer and the two without the ReLU between them, at half, once and twice the "
                      "preset's learning rate", _learning_rates(PRESETS["cpu"]["lr"])),
    # Which block's faster steps stall the paced control: the class maps' or the ones below?
    "linear_1x1_paced": ("One 1x1 layer from the linear pair's start, its 1x1 layers at the pair's starting pace in "
                         "every block, in all but the last, or in the last only, its biases at its weights' pace or at "
                         "the pace of the pair's bias", _paced_blocks(3)),
    # The pace in the first two blocks, where it did not stall: does one layer catch up with ten epochs?
    "linear_1x1_paced_long": ("One 1x1 layer from the linear pair's start, its 1x1 layers at the pair's starting "
                              "pace in every block or in all but the last, 10 epochs with a cosine schedule",
                              _paced_blocks(3, epochs=10, schedule="cosine")[:4]),
    # The pair's starting step is not the same in every direction: with the whole of it, fixed, does one layer
    # keep its class maps open and learn as the pair does?
    "linear_1x1_matrix": ("One 1x1 layer from the linear pair's start, its 1x1 layers at the pair's starting pace "
                          "or with the pair's whole starting step (direction by direction, fixed) in every block, in "
                          "all but the last, or in the last only", _matrix_steps(3)),
    # The whole starting step in every block and in the last: does one layer keep up with the pair for ten epochs,
    # while the pair's own step changes as it learns?
    "linear_1x1_matrix_long": ("One 1x1 layer from the linear pair's start with the pair's whole starting step "
                               "(direction by direction, fixed) in every block or in the last only, 10 epochs with a "
                               "cosine schedule",
                               [_matrix_steps(3, epochs=10, schedule="cosine")[i] for i in (0, 1, 4, 6)]),
    # The whole starting step stalled from one of five seeds: how often, from five more?
    "linear_1x1_matrix_seeds": ("The linear pair, one 1x1 layer from its start, and with the pair's whole starting "
                                "step (direction by direction, fixed) in every block, from five more seeds",
                                [_matrix_steps(3)[i] for i in (0, 1, 4)]),
    "kernel_3x3": ("3x3 convolutions in place of the 1x1 layers", [
        ("kernel_1x1=1", {}, {}), ("kernel_1x1=3", {"kernel_1x1": 3}, {})]),
    "gap_vs_fc": ("Global average pooling against flatten + a fully connected layer", [
        ("head=gap", {}, {}), ("head=fc", {"head": "fc"}, {})]),
    "squeeze": ("Last block: gradual squeeze to 10 channels against one step", [
        ("gradual", {}, {}), ("one_step", {"last_block": (10, 10, 10)}, {})]),
    "tuned": ("The preset's recipe against a tuned one, same epoch budget", [
        ("preset", {}, {}),
        ("tuned", {}, {"momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "label_smoothing": 0.1,
                       "lr": 0.02})]),
    # Does a run that starts well stay well? The seeds' recipe diverged in some 10-epoch GPU runs.
    "full_run_stability": ("The preset's recipe over its whole run against clipped gradients (norm 2), half "
                           "the learning rate and unstandardised pixels", _recipe_changes(PRESETS["cpu"]["lr"])),
}

# The stability experiments (d2l_local.stability) write results/NAME.json too, with their own presets:
# name -> the initialisations it runs and its change to the seeds' recipe (lr 0.1, no clipping).
STABILITY = {
    "stability": {"inits": INITS},
    # Norm 2 was chosen from one unclipped diagnosis run (seed 2, not recorded): norms mostly 0.4 to 1.5,
    # single steps 10 to 110.
    "stability_clip": {"inits": ("d2l_local",), "clip_grad_norm": 2.0},
    # Two controls for stability_clip, which ended up clipping most steps: a smaller step everywhere
    # (half the learning rate) and a bound that only the longest steps reach (10: above every per-window
    # median of stability_clip's gradient norms, below most of its runs' largest single steps).
    "stability_half_lr": {"inits": ("d2l_local",), "lr": 0.05},
    "stability_clip_loose": {"inits": ("d2l_local",), "clip_grad_norm": 10.0},
    # d2l_local standardises the pixels, d2l feeds them in [0, 1]: is the standardisation behind the collapses?
    "stability_unit_inputs": {"inits": ("d2l_local",), "standardize": False},
    # stability's d2l_local runs alone, unchanged: the twin of a variant recorded on another machine (bf16
    # rounding differs between CPUs, and over hundreds of steps that alone can change a run's path).
    "stability_twin": {"inits": ("d2l_local",)},
}
# On the 224 network the two squeeze variants swap roles: the seeds squeeze in one step.
GPU_VARIANTS = {"squeeze": [("one_step", {}, {}), ("gradual", {"last_block": (192, 48, 10)}, {})],
                "full_run_stability": _recipe_changes(PRESETS["gpu"]["lr"]),
                "linear_1x1_lr": _learning_rates(PRESETS["gpu"]["lr"]), "linear_1x1_paced": _paced_blocks(4),
                "linear_1x1_matrix": _matrix_steps(4)}


def _non_default(model, options):
    """``options`` without the entries that equal the model's defaults (so that equal runs share a key)."""
    defaults = inspect.signature(MODELS[model]).parameters
    return {k: v for k, v in options.items() if defaults[k].default != v}


def _own_draws_dropped(recipe, seed):
    """``recipe`` without a :data:`DRAW_KEYS` entry that is the run's own seed: the same run."""
    return {k: v for k, v in recipe.items() if not (k in DRAW_KEYS and v == seed)}


def _run_key(preset, model, options, recipe, seed):
    blob = json.dumps([preset, model, _non_default(model, options), recipe, seed], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def run_one(preset, options, recipe, seed, device, loaders, save_model=None):
    """Train one variant from one seed; return its record (and save weights if asked)."""
    config = PRESETS[preset]
    model, size = config["model"], DEFAULT_SIZE[config["model"]]
    net = build_model(model, input_size=size, **options)
    init, lr_1x1_scale, lr_1x1_bias_scale, precondition_1x1 = recipe["init"], 1.0, None, None
    for key, allowed in (("start", ("linear_1x1",)), ("lr_1x1", ("linear_1x1", "linear_1x1_matrix")),
                         ("lr_1x1_bias", ("linear_1x1",))):
        if recipe.get(key) not in (None, *allowed):
            raise ValueError(f"{key} must be None or {' or '.join(map(repr, allowed))}, got {recipe[key]!r}")
    if recipe.get("lr_1x1_bias") and recipe.get("lr_1x1") != "linear_1x1":
        raise ValueError("lr_1x1_bias needs lr_1x1='linear_1x1'")
    if recipe.get("start") or recipe.get("lr_1x1"):
        # this seed's linear pair as train_ch6 initialises it
        pair = build_model(model, input_size=size, **{**options, "num_1x1": 2, "linear_1x1": True})
        torch.manual_seed(seed)
        init_weights(pair, init)
    if recipe.get("start"):  # multiplied out for one 1x1 layer per block
        copy_weights(multiply_out(pair) if options.get("num_1x1") == 1 else pair, net)
        init = None
    if recipe.get("lr_1x1"):
        # each 1x1 layer moves as fast as the pair's product starts to (its bias too, if asked), or, with
        # "linear_1x1_matrix", takes the pair's whole starting step, direction by direction
        gains = product_step_gains(pair)
        blocks = recipe.get("lr_1x1_blocks", range(1, len(gains) + 1))
        if not set(blocks) <= set(range(1, len(gains) + 1)):
            raise ValueError(f"lr_1x1_blocks names blocks 1 to {len(gains)}, got {list(blocks)}")

        def in_blocks(per_block, otherwise=1.0):
            return [each if block in blocks else otherwise for block, each in enumerate(per_block, 1)]

        if recipe["lr_1x1"] == "linear_1x1_matrix":
            precondition_1x1 = in_blocks(product_step_operators(pair), None)
        else:
            lr_1x1_scale = in_blocks(gains)
        if recipe.get("lr_1x1_bias"):
            lr_1x1_bias_scale = in_blocks(product_bias_step_gains(pair))
    elif "lr_1x1_blocks" in recipe:
        raise ValueError("lr_1x1_blocks needs lr_1x1")
    if set(DRAW_KEYS) & recipe.keys():
        keys = ", ".join(DRAW_KEYS)
        if recipe.get("start") or recipe.get("lr_1x1"):
            raise ValueError(f"{keys} draw the network's own start; they cannot be combined with start or lr_1x1")
        if init in ("default", "xavier"):  # PyTorch's own draw of the weights, or of the biases, at build time
            raise ValueError(f"{keys} need an init that draws every weight and bias, not {init!r}")
        # the initial weights from another seed's draw (all of them, or a part's), while the run's own seed
        # still drives its dropout (train_ch6 reseeds every epoch)
        torch.manual_seed(recipe.get("init_seed", seed))
        init_weights(net, init)
        for key, part in START_PARTS.items():
            if key in recipe:
                donor = build_model(model, input_size=size, **options)
                torch.manual_seed(recipe[key])
                copy_weights(part(init_weights(donor, init)), part(net))
        init = None
    params = count_parameters(net)
    flops = training_flops_per_image(build_model(model, input_size=size, **options), size)
    start = time.time()
    diverged = None
    try:
        history = train_ch6(net, *loaders, recipe["epochs"], recipe["lr"], device, seed=seed, init=init,
                            momentum=recipe["momentum"], weight_decay=recipe["weight_decay"],
                            schedule=recipe["schedule"], label_smoothing=recipe.get("label_smoothing", 0.0),
                            clip_grad_norm=recipe.get("clip_grad_norm"), lr_1x1_scale=lr_1x1_scale,
                            lr_1x1_bias_scale=lr_1x1_bias_scale, precondition_1x1=precondition_1x1,
                            checkpoint=save_model, progress=False, plot=False)
    except TrainingDiverged as err:  # a result too: recorded with the epochs it finished, not lost
        print(f"[run] diverged: {err}", flush=True)
        history, diverged = err.history, str(err)
        if save_model:  # not a trained baseline: load_model must not hand out its last finished epoch
            Path(save_model).unlink(missing_ok=True)
    precision, max_images = history.config["precision"], QUICK_IMAGES if quick_mode() else None
    probe = probe_images(loaders[1])
    final = history.final
    return {
        "model": model, "image_size": size, "options": options,
        "config": {**options, **recipe, **({"lr_1x1_scale": lr_1x1_scale} if recipe.get("lr_1x1") == "linear_1x1"
                                           else {}),
                   **({"lr_1x1_bias_scale": lr_1x1_bias_scale} if recipe.get("lr_1x1_bias") else {})},
        "num_1x1": options.get("num_1x1", 2), "seed": seed, "params": params,
        "training_flops_per_image": flops, "history": history.epochs, "diverged": diverged,
        # the network as training left it (a diverged one has NaN weights and predicts one class)
        "final_test_acc": evaluate_accuracy(net, loaders[1], device, precision, max_images) if diverged
        else final["test_acc"],
        "final_train_acc": None if diverged else final["train_acc"],
        # the trained network on the whole training set in eval mode (no dropout): the gap to the test accuracy
        "final_train_acc_eval": evaluate_accuracy(net, loaders[0], device, precision, max_images),
        # how fast each product of two 1x1 layers ended up moving (none without such pairs)
        "final_product_step_gains": product_step_gains(net),
        # channels of each ReLU layer that no probe image opens (a closed class map never learns again)
        "closed_channels_at_end": closed_channels_by_layer(net, probe, device, precision),
        # per class, the share of probe images whose class map is closed (a zero score: no gradient for it)
        "zero_scores_by_class_at_end": zero_scores_by_class(net, probe, device, precision),
        "seconds_per_epoch": (sum(e["seconds"] for e in history.epochs) / len(history.epochs)
                              if history.epochs else None),
        "wall_seconds": time.time() - start, "precision": precision,
        "provenance": provenance(device),
    }


def _variants(name, preset):
    if preset == "gpu" and name in GPU_VARIANTS:
        return GPU_VARIANTS[name]
    return EXPERIMENTS[name][1]


def run_experiment(name, preset="cpu", *, seeds=None, only=None, verify=False, fresh=False, device="cpu"):
    """Run experiment ``name`` (or ``"all"``); yield the paths written.

    ``fresh`` trains every run again instead of reusing a kept one, except
    runs kept during this same call (so experiments that share a baseline
    still train it once); it may also be the ``time.time()`` before which
    kept runs are not reused.
    """
    if fresh is True:
        fresh = time.time()
    if name == "all":
        if only:
            raise ValueError("--only names a variant of one experiment; it cannot be combined with 'all'")
        for each in _all_names(preset, seeds, verify):
            yield from run_experiment(each, preset, seeds=seeds, verify=verify, fresh=fresh, device=device)
        return
    if name in STABILITY:
        if verify:
            raise ValueError(f"{name} has no --verify: run it again and compare results/{name}.json")
        from .stability import run_stability

        yield run_stability(name, preset, seeds=seeds, device=device, only=only)
        return
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {[*EXPERIMENTS, *STABILITY, 'all']}")
    if not _seeds_named(name, preset, seeds):
        presets = [each for each, named in SEEDS_FOR if named == name]
        raise ValueError(f"{name} is defined by the seeds it trains from, which are named for the {presets} preset "
                         f"only; pass --seeds to run it on the {preset!r} preset")
    config = PRESETS[preset]
    seeds = tuple(seeds or SEEDS_FOR.get((preset, name), config["seeds"]))
    variants = [v for v in _variants(name, preset) if only in (None, v[0])]
    if not variants:
        raise ValueError(f"{name} has no variant {only!r}; its variants are {[v[0] for v in _variants(name, preset)]}")
    device = torch.device(device)
    loaders = _loaders_for(config, device)
    path = results_dir() / f"{name}.json"
    if verify:
        yield _verify(path, preset, variants, seeds, device, loaders)
        return
    runs = []
    for label, options, overrides in variants:
        for seed in seeds:
            recipe = _own_draws_dropped({k: config.get(k, 0.0) for k in RECIPE_KEYS} | overrides, seed)
            key = _run_key(preset, config["model"], options, recipe, seed)
            cached = results_dir() / "runs" / f"{key}.json"
            record = json.loads(cached.read_text()) if cached.exists() else None
            if record is None or (fresh and cached.stat().st_mtime < fresh) or not RUN_KEYS <= record.keys():
                # not kept, or to be trained again, or kept by an older version that recorded less
                baseline = not _non_default(config["model"], options) and not overrides and seed == config["seeds"][0]
                save = results_dir() / "models" / f"{config['model']}_{preset}_seed{seed}.pt" if baseline else None
                print(f"[{name}] {label} seed {seed} ...", flush=True)
                record = run_one(preset, options, recipe, seed, device, loaders(recipe), save_model=save)
                write_json_atomic(cached, record)
            runs.append({"variant": label, **record})
            print(f"[{name}] {label} seed {seed}: test acc {record['final_test_acc']:.4f}", flush=True)
    result = {
        "experiment": name, "description": EXPERIMENTS[name][0], "preset": preset,
        "provenance": provenance(device), "config": {k: v for k, v in config.items()},
        "seeds": list(seeds), "variants": [v[0] for v in variants], "runs": runs,
    }
    write_json_atomic(path, result)
    yield path


def _seeds_named(name, preset, seeds=None):
    """Whether experiment ``name`` has seeds to run from on ``preset``: those of ``BY_SEEDS`` only where
    ``SEEDS_FOR`` or ``seeds`` names them."""
    return name not in BY_SEEDS or bool(seeds) or (preset, name) in SEEDS_FOR


def _all_names(preset, seeds=None, verify=False):
    """What ``all`` runs: every experiment that has seeds named on ``preset``, then the stability runs (which have
    no --verify)."""
    return [*(name for name in EXPERIMENTS if _seeds_named(name, preset, seeds)), *([] if verify else STABILITY)]


def _loaders_for(config, device):
    """``loaders(recipe)``: the preset's train and test loaders, standardised unless the recipe says not."""
    made = {}

    def loaders(recipe):
        standardize = recipe.get("standardize", True)
        if standardize not in made:
            made[standardize] = load_data_fashion_mnist(config["batch_size"], resize=DEFAULT_SIZE[config["model"]],
                                                        device=device, standardize=standardize)
        return made[standardize]

    return loaders


def _verify(path, preset, variants, seeds, device, loaders):
    """Re-train the selected runs and compare their histories with the recorded ones."""
    recorded = json.loads(Path(path).read_text())
    config = PRESETS[preset]
    mismatches = []
    for label, options, overrides in variants:
        for seed in seeds:
            recipe = _own_draws_dropped({k: config.get(k, 0.0) for k in RECIPE_KEYS} | overrides, seed)
            old = next((r for r in recorded["runs"] if r["variant"] == label and r["seed"] == seed), None)
            if old is None:
                raise ValueError(f"{path} has no run of {label} from seed {seed}; its seeds are {recorded['seeds']}")
            new = run_one(preset, options, recipe, seed, device, loaders(recipe))
            keys = ("train_loss", "train_acc", "test_acc")
            same = len(old["history"]) == len(new["history"]) and all(
                a[k] == b[k] for a, b in zip(old["history"], new["history"]) for k in keys)
            print(f"[verify] {label} seed {seed}: recorded {old['final_test_acc']:.4f}, "
                  f"re-run {new['final_test_acc']:.4f} -> {'identical' if same else 'DIFFERENT'}")
            if not same:
                mismatches.append((label, seed))
    if mismatches:
        raise ValueError(f"re-runs differ from {path}: {mismatches}")
    return path


def load_model(preset="cpu", seed=0):
    """The baseline network trained by the ``preset`` experiments, ready for inference."""
    model = PRESETS[preset]["model"]
    path = REPO / "results" / "models" / f"{model}_{preset}_seed{seed}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `python -m d2l_local experiment conv1x1_count "
                                f"--preset {preset}` to train and save it.")
    net = build_model(model)
    net.load_state_dict(load_checkpoint(path)["model"])
    return net.eval()
