"""Recorded results, ready for the chapters: tables, curves and where they came from.

``python -m d2l_local experiment NAME --preset cpu|gpu`` writes
``results/NAME.json``; the chapters read those files through the helpers
here and print every number from them, so no number on a page is typed by
hand::

    from d2l_local import results

    record = results.load("conv1x1_count")
    results.summary(record)               # one row per variant
    print(results.describe_provenance(record))
    results.plot_curves(record)           # test accuracy per epoch over seeds

Files are read from ``$D2L_LOCAL_RESULTS`` when it is set (to try a chapter
with throwaway results), otherwise from the repository's ``results/``.
All figure text is ASCII, so it renders on Colab, which has no CJK fonts.
"""

import json
import math
import statistics
import warnings
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .plot import ascii_text, plot_mean_spread
from .provenance import results_root
from .train import chance_level

SUMMARY_COLUMNS = ("seeds", "test acc mean", "test acc std", "test acc min", "test acc max",
                   "train-test gap", "params", "training GFLOPs/image")


def results_folder():
    """``$D2L_LOCAL_RESULTS`` when set, otherwise the repository's ``results/``."""
    return results_root()


def load(name, folder=None):
    """The record of experiment ``name`` (``results/NAME.json``) as a dict.

    Raises ``FileNotFoundError`` naming the command that produces the file
    when it does not exist yet.
    """
    path = Path(folder or results_folder()) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist yet. Produce it with `python -m d2l_local experiment {name} --preset cpu` "
            f"(or `--preset gpu` on a GPU), from the repository's root.")
    return json.loads(path.read_text(encoding="utf-8"))


def runs_of(record, variant):
    """The runs of ``variant`` in ``record``, one per seed, in recorded order."""
    runs = [run for run in record["runs"] if run["variant"] == variant]
    if not runs:
        raise KeyError(f"{record.get('experiment')} has no runs of variant {variant!r}; "
                       f"its variants are {record.get('variants')}")
    return runs


def pool(*records):
    """One record of the variants that ``records`` share, with the runs of all of them: more seeds than one file holds.

    The variants keep the first record's order. Each must have been trained with one recipe in every record,
    and no seed may appear twice for a variant. The pooled record's ``provenance``, ``preset`` and ``config``
    are the newest record's, and ``sources`` names every file (see :func:`describe_provenance`).
    """
    if len(records) < 2:
        raise ValueError("pool joins two records or more")
    names = " and ".join(r["experiment"] for r in records)
    shared = [variant for variant in records[0]["variants"] if all(variant in r["variants"] for r in records[1:])]
    if not shared:
        raise ValueError(f"{names} share no variant")
    runs = [run for record in records for run in record["runs"] if run["variant"] in shared]
    for variant in shared:
        recipes = {json.dumps(run.get("config"), sort_keys=True) for run in runs if run["variant"] == variant}
        if len(recipes) > 1:
            raise ValueError(f"{variant!r} was trained with different recipes in {names}: {sorted(recipes)}")
    runs_per_seed = Counter((run["variant"], run["seed"]) for run in runs)
    if twice := sorted(key for key, n in runs_per_seed.items() if n > 1):
        raise ValueError(f"runs from the same variant and seed in more than one record: {twice}")
    newest = max(records, key=lambda r: r["provenance"].get("date", ""))
    sources = [name for r in records for name in r.get("sources", [r["experiment"]])]
    return {**newest, "experiment": " + ".join(sources), "sources": sources, "variants": shared,
            "seeds": sorted({run["seed"] for run in runs}), "runs": runs}


def _std(values):
    """Sample standard deviation (n - 1); 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_interval(values, confidence=0.95):
    """Student's t confidence interval of the mean of ``values``; NaNs for fewer than two."""
    if len(values) < 2:
        return (float("nan"), float("nan"))
    from scipy import stats  # not a dependency of d2l_local's metadata; d2l, the book and Colab have it

    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.fmean(values)
    return (float(mean - half), float(mean + half))


def variant_stats(record, variant):
    """Numbers of one variant over its seeds, as a dict.

    Keys: ``seeds`` (how many), ``acc_mean``, ``acc_std`` (sample standard
    deviation), ``acc_min``, ``acc_max`` (final test accuracy), ``gap``
    (mean of final train accuracy minus final test accuracy, both measured
    on the trained network in eval mode), ``params``, ``gflops`` (training
    GFLOPs per image, forward and backward).

    Times are left out on purpose: runs kept in ``results/runs/`` are shared
    between experiments and were timed at different moments, on a machine
    that may have been busy, so their times do not compare.
    ``python -m d2l_local bench`` times networks side by side.
    """
    runs = runs_of(record, variant)
    accs = [run["final_test_acc"] for run in runs]
    return {
        "seeds": len(runs),
        "acc_mean": statistics.fmean(accs),
        "acc_std": _std(accs),
        "acc_min": min(accs),
        "acc_max": max(accs),
        "gap": statistics.fmean(run["final_train_acc_eval"] - run["final_test_acc"] for run in runs),
        "params": runs[0]["params"],
        "gflops": runs[0]["training_flops_per_image"] / 1e9,
    }


def summary(record):
    """One row per variant (in recorded order) with its numbers over the seeds.

    Columns: ``seeds``; final test accuracy ``mean``, ``std`` (sample), ``min``
    and ``max`` over the seeds; ``train-test gap``: accuracy on the training
    set minus accuracy on the test set, of the trained network in eval mode,
    averaged over seeds; ``params``; ``training GFLOPs/image`` (forward and
    backward). See :func:`variant_stats` for why there is no time column.
    """
    rows = {}
    for variant in record["variants"]:
        s = variant_stats(record, variant)
        rows[variant] = dict(zip(SUMMARY_COLUMNS, (
            s["seeds"], s["acc_mean"], s["acc_std"], s["acc_min"], s["acc_max"], s["gap"], s["params"],
            s["gflops"])))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "variant"
    return table.round({"test acc mean": 4, "test acc std": 4, "test acc min": 4, "test acc max": 4,
                        "train-test gap": 4, "training GFLOPs/image": 4})


def compare(record, base, other):
    """What ``other`` changes against ``base``, as a dict of plain numbers.

    ``acc_diff``: difference of mean final test accuracy (other minus base);
    ``spread``: the larger of the two variants' min..max ranges over seeds;
    ``ranges_overlap``: whether the two min..max ranges overlap (with a few
    seeds, a difference inside the seed spread is not evidence of a real one);
    ``params_ratio``, ``flops_ratio``: other / base; ``base`` and ``other``:
    the :func:`variant_stats` of each. ``paired``: the seeds both variants ran
    from (runs from one seed share their data order, so this pairs like with
    like); ``wins``: on how many of them ``other`` ended with the higher test
    accuracy; ``paired_diff_mean``, ``paired_diff_std``: mean and sample
    standard deviation of the per-seed differences (other minus base);
    ``paired_diff_ci95``: the 95% confidence interval of their mean, from
    Student's t (it assumes the differences are roughly normal; NaN for
    fewer than two seeds).
    """
    a, b = variant_stats(record, base), variant_stats(record, other)
    base_by_seed = {run["seed"]: run["final_test_acc"] for run in runs_of(record, base)}
    other_by_seed = {run["seed"]: run["final_test_acc"] for run in runs_of(record, other)}
    paired = sorted(base_by_seed.keys() & other_by_seed.keys())
    diffs = [other_by_seed[seed] - base_by_seed[seed] for seed in paired]
    return {
        "acc_diff": b["acc_mean"] - a["acc_mean"],
        "paired": len(paired),
        "wins": sum(diff > 0 for diff in diffs),
        "paired_diff_mean": statistics.fmean(diffs) if diffs else float("nan"),
        "paired_diff_std": _std(diffs) if diffs else float("nan"),
        "paired_diff_ci95": _mean_interval(diffs),
        "spread": max(a["acc_max"] - a["acc_min"], b["acc_max"] - b["acc_min"]),
        "ranges_overlap": a["acc_min"] <= b["acc_max"] and b["acc_min"] <= a["acc_max"],
        "params_ratio": b["params"] / a["params"],
        "flops_ratio": b["gflops"] / a["gflops"],
        "base": a,
        "other": b,
    }


def describe_change(record, base, other):
    """One sentence, computed from ``record``: what going from ``base`` to ``other`` changes.

    It states the mean final test accuracy of both, the difference in
    percentage points, whether the difference lies within the seed spread
    (see :func:`compare`), the per-seed differences with the 95% confidence
    interval of their mean (from two seeds on), and the ratios of
    parameters and training FLOPs per image.
    """
    c = compare(record, base, other)
    a, b = c["base"], c["other"]
    interval = _interval_text(c)
    if c["ranges_overlap"]:
        spread = "within the seed spread (the min..max ranges over seeds overlap)"
    else:
        spread = "beyond the seed spread (the min..max ranges over seeds do not overlap)"
    return (f"{base} -> {other}: mean test accuracy {a['acc_mean']:.4f} -> {b['acc_mean']:.4f} "
            f"({100 * c['acc_diff']:+.2f} points, {b['seeds']} seeds), {spread}; "
            f"{other} is higher from {c['wins']} of the {c['paired']} seeds both ran from (per-seed difference "
            f"{100 * c['paired_diff_mean']:+.2f} ± {100 * c['paired_diff_std']:.2f} points"
            f"{f', 95% confidence interval of its mean {interval} points' if interval else ''}); "
            f"parameters {a['params']:,} -> {b['params']:,} (x{c['params_ratio']:.2f}), "
            f"training FLOPs per image x{c['flops_ratio']:.2f}.")


def _interval_text(comparison):
    """The 95% interval of the mean per-seed difference in points ("+0.22 to +2.02"); "" for fewer than two."""
    low, high = (100 * end for end in comparison["paired_diff_ci95"])
    return "" if math.isnan(low) else f"{low:+.2f} to {high:+.2f}"


def compare_table(record, pairs):
    """One row per ``(base, other)`` pair of variants: what :func:`describe_change` says, as a table.

    Columns: the mean final test accuracy of each; ``points``: their
    difference (other minus base, percentage points); ``other higher from``:
    on how many of the seeds both ran from ``other`` ended higher; the per-seed
    difference (mean ± sample standard deviation) and the 95% confidence interval
    of its mean (empty for fewer than two seeds); ``seed spread``: whether the
    difference lies ``within`` the seed spread or ``beyond`` it (see :func:`compare`).
    """
    rows = {}
    for base, other in pairs:
        c = compare(record, base, other)
        rows[base, other] = {
            "test acc base": round(c["base"]["acc_mean"], 4), "test acc other": round(c["other"]["acc_mean"], 4),
            "points": round(100 * c["acc_diff"], 2), "other higher from": f"{c['wins']} of {c['paired']} seeds",
            "per-seed points": f"{100 * c['paired_diff_mean']:+.2f} ± {100 * c['paired_diff_std']:.2f}",
            "per-seed 95% interval": _interval_text(c),
            "seed spread": "within" if c["ranges_overlap"] else "beyond"}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["base", "other"]
    return table


def closed_class_scores(record):
    """One row per variant, one column per seed: the share of the class scores that were exactly zero when the
    run ended, over the probe images and the classes (``zero_scores_by_class_at_end``). Behind a ReLU and
    global average pooling, a zero score is a class map closed for that image, which passes no gradient.
    Runs kept from before the experiments recorded it show NaN."""
    table = pd.DataFrame({variant: {run["seed"]: statistics.fmean(run["zero_scores_by_class_at_end"])
                                    if "zero_scores_by_class_at_end" in run else math.nan
                                    for run in runs_of(record, variant)} for variant in record["variants"]}).T
    table.index.name, table.columns.name = "variant", "seed"
    return table


def stalled_seeds(record, variants=None):
    """The seeds, in increasing order, from which a run of ``variants`` (every variant by default) stalled: it
    ended with most of its class scores exactly zero (:func:`closed_class_scores` above one half), its class maps
    closed for most images. Raises ``ValueError`` for runs kept from before the experiments recorded the scores."""
    variants = record["variants"] if variants is None else list(variants)
    runs = [run for variant in variants for run in runs_of(record, variant)]
    if unknown := [(run["variant"], run["seed"]) for run in runs if "zero_scores_by_class_at_end" not in run]:
        raise ValueError(f"{record['experiment']}: runs without zero class scores, kept from an older version: "
                         f"{unknown}; train them again with `python -m d2l_local experiment "
                         f"{record['experiment']} --fresh` to tell whether they stalled")
    return sorted({run["seed"] for run in runs if statistics.fmean(run["zero_scores_by_class_at_end"]) > 0.5})


def without_seeds(record, seeds):
    """``record`` without the runs from ``seeds``: to compare variants over the seeds from which all of them
    learned (see :func:`stalled_seeds`)."""
    seeds = set(seeds)
    return {**record, "seeds": [seed for seed in record["seeds"] if seed not in seeds],
            "runs": [run for run in record["runs"] if run["seed"] not in seeds]}


def plot_curves(record, key="test_acc", ax=None, variants=None):
    """Per-epoch ``key`` of every variant (or of ``variants``): the mean over seeds and a min..max band.

    ``key`` is a field of the per-epoch history (``test_acc``, ``train_acc``,
    ``train_loss``, ``img_per_s``). Returns the matplotlib figure.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
    else:
        fig = ax.figure
    for variant in variants or record["variants"]:
        runs = runs_of(record, variant)
        epochs = [entry["epoch"] for entry in runs[0]["history"]]
        plot_mean_spread(ax, epochs, [[entry[key] for entry in run["history"]] for run in runs], ascii_text(variant))
    seeds = len(runs_of(record, record["variants"][0]))
    ax.set(xlabel="epoch", ylabel=ascii_text(key.replace("_", " ")),
           title=ascii_text(f"{record['experiment']} ({record['preset']} preset): mean, min..max over {seeds} seeds"))
    ax.set_xticks(epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def describe_provenance(record):
    """One line: preset, device, commit, date (and whether the tree was dirty).

    Where kept runs came from several machines, it names each machine and how
    many of the runs it trained, instead of the machine that wrote the record.
    """
    prov = record.get("provenance", {})
    commit = (prov.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if prov.get("dirty") else "")
    runs = record.get("runs", [])
    run_commits = {(run.get("provenance") or {}).get("commit") for run in runs} - {None}
    runs_note = f" (its runs from {len(run_commits)} commits)" if len(run_commits) > 1 else ""
    run_devices = Counter((run.get("provenance") or {}).get("device") for run in runs if run.get("provenance"))
    if len(run_devices) > 1:
        device = "devices " + ", ".join(f"{name} for {n} run{'s' * (n != 1)}" for name, n in run_devices.items())
    else:
        device = f"device {prov.get('device', 'unknown')}"
    precisions = sorted({run["precision"] for run in runs if run.get("precision")})
    precision = f", precision {'/'.join(precisions)}" if precisions else ""
    sources = record.get("sources", [record.get("experiment")])
    files = " and ".join(f"results/{name}.json" for name in sources)
    return (f"Source{'s' * (len(sources) > 1)}: {files}, preset '{record.get('preset')}', "
            f"{device}{precision}, commit {commit}{runs_note}, date {prov.get('date', 'unknown')}")


def _started(run, config):
    return max(run["acc_curve"]) >= config["stuck_below"]


def _collapsed(run, config):
    return _started(run, config) and run["final_window_acc"] < chance_level(config.get("num_classes", 10))


def stability_summary(record):
    """Per initialisation: started, stuck, collapsed, dead and diverged runs (each "k of n"),
    last-window accuracy and zero scores.

    A run has started when its training accuracy over some window reached
    ``config["stuck_below"]`` (chance is 0.1 with 10 classes). It is stuck when
    its accuracy over the last window is below that threshold, and collapsed
    when it had started but its last window is back at chance
    (:func:`d2l_local.train.chance_level`, where ``train_ch6`` warns). It is dead when every class score
    over the last window is exactly zero: every class map is closed by its
    ReLU, no gradient flows, and it never learns. It diverged when a loss was
    NaN or infinite. ``last-window zero scores``: the fraction of class scores that are exactly
    zero over the last window (a closed class map), averaged over the runs.
    """
    if record.get("complete") is False:
        name = record.get("experiment", "stability")
        warnings.warn(f"results/{name}.json holds {len(record['runs'])} runs of an experiment that was "
                      f"interrupted; run `python -m d2l_local experiment {name}` again to complete it.",
                      stacklevel=2)
    config, rows = record["config"], {}
    for init in dict.fromkeys(run["init"] for run in record["runs"]):
        runs = [run for run in record["runs"] if run["init"] == init]
        accs = [run["final_window_acc"] for run in runs]
        stuck = sum(bool(run["stuck"]) for run in runs)
        started = sum(_started(run, config) for run in runs)
        collapsed = sum(_collapsed(run, config) for run in runs)
        dead = sum(bool(run.get("dead")) for run in runs)
        diverged = sum(bool(run["nonfinite"]) for run in runs)
        rows[init] = {"started (of n)": f"{started} of {len(runs)}", "stuck (of n)": f"{stuck} of {len(runs)}",
                      "collapsed (of n)": f"{collapsed} of {len(runs)}", "dead (of n)": f"{dead} of {len(runs)}",
                      "diverged (of n)": f"{diverged} of {len(runs)}",
                      "last-window acc mean": round(statistics.fmean(accs), 4),
                      "last-window zero scores": round(statistics.fmean(
                          run["zero_score_curve"][-1] for run in runs), 4) if "zero_score_curve" in runs[0] else None,
                      "last-window acc min": round(min(accs), 4), "last-window acc max": round(max(accs), 4)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "init"
    return table


def stability_runs(record):
    """One row per run: its outcome, its best window (accuracy and mean loss), its last window, the
    largest single-step loss after its best window, and its closed ReLU channels at the end, per NiN block.

    Outcome: ``diverged`` (a loss turned NaN or infinite), ``dead``, ``collapsed`` (started, then back at
    chance), ``never started``, ``stuck``
    (started, but below ``config["stuck_below"]`` over the last window) or ``learning``. A block's
    cell lists, for each of its ReLU layers, how many channels were zero for every probe image,
    then the layers' width: ``"30/46/73 of 384"``. For a diverged run, the step loss and step are those of the
    first window with a non-finite step loss, its best window is the best before that one (none when it
    diverged in the first window), and its closed channels are left blank: NaN weights close nothing.
    """
    config, rows = record["config"], {}
    for run in record["runs"]:
        accs, window = run["acc_curve"], run["window"]
        losses = run.get("max_loss_curve", [])
        if run["nonfinite"]:  # the first window with a non-finite step loss, whatever the best window
            spike = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
            best = max(range(len(accs) if spike is None else spike), key=accs.__getitem__, default=None)
        else:
            best = max(range(len(accs)), key=accs.__getitem__)
            spike = max(range(best + 1, len(losses)), key=losses.__getitem__, default=None)
        outcome = ("diverged" if run["nonfinite"] else "dead" if run.get("dead")
                   else "collapsed" if _collapsed(run, config)
                   else "never started" if not _started(run, config) else "stuck" if run["stuck"] else "learning")
        row = {"outcome": outcome,
               "best window acc": None if best is None else round(accs[best], 3),
               "best by step": None if best is None else (best + 1) * window,
               "best window loss": None if best is None else round(run["loss_curve"][best], 3),
               "last window acc": round(accs[-1], 3),
               "largest step loss after best": None if spike is None else round(losses[spike], 3),
               "by step": None if spike is None else (spike + 1) * window}
        layers = [] if run["nonfinite"] else run.get("closed_channels_at_end", [])
        for block in dict.fromkeys(layer["block"] for layer in layers):
            inside = [layer for layer in layers if layer["block"] == block]
            row[f"block {block} closed"] = (f"{'/'.join(str(layer['closed']) for layer in inside)} "
                                            f"of {inside[0]['channels']}")
        rows[run["init"], run["seed"]] = row
    table = pd.DataFrame.from_dict(rows, orient="index").astype({"by step": "Int64", "best by step": "Int64"})
    table.index.names = ["init", "seed"]
    return table


def plot_stability(record, key="loss_curve", init=None):
    """One panel per initialisation, one line per run (colour: seed) over the first steps; returns the figure.

    ``record`` is a stability record, or a dict ``{panel title: record}`` that
    compares records of different recipes, one panel each; ``init`` keeps only
    the runs of that initialisation. ``key`` is ``"loss_curve"`` or
    ``"acc_curve"``; each point is the mean over a window of
    ``config["window"]`` steps, drawn at the window's last step. A window whose
    loss is not finite (a run that diverged) leaves a gap.
    """
    records = {None: record} if "runs" in record else record
    panels = {}
    for label, each in records.items():
        for run in each["runs"]:
            if init in (None, run["init"]):
                panels.setdefault(label or f"init={run['init']}", []).append(run)
    configs = [each["config"] for each in records.values()]
    shared = {k for k in configs[0] if all(config.get(k) == configs[0][k] for config in configs)}
    presets = {each["preset"] for each in records.values()}
    if not {"steps", "window", "batch_size", "image_size"} <= shared or len(presets) > 1:
        raise ValueError("records compared in one figure must share the preset, steps, window, batch size and "
                         "image size")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 + 2.4 * cols, 0.6 + 2.4 * rows), sharex=True, sharey=True,
                             squeeze=False)
    axes = axes.flatten()
    config = configs[0]
    for ax, (title, runs) in zip(axes, panels.items()):
        for run in runs:
            steps = [(i + 1) * run["window"] for i in range(len(run[key]))]
            ax.plot(steps, run[key], marker=".", markersize=3, alpha=0.8, label=f"seed {run['seed']}")
        diverged = sum(bool(run["nonfinite"]) for run in runs)  # their NaN windows draw nothing
        ax.set_title(ascii_text(title + (f" ({diverged} diverged)" if diverged else "")), fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
        ax.xaxis.set_tick_params(labelbottom=True)
    name = "train loss" if key == "loss_curve" else "train acc"
    for ax in axes[::cols]:
        ax.set_ylabel(f"{name}\n(mean over {config['window']} steps)")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[len(panels):]:
        ax.axis("off")  # an empty panel holds the legend
    if len(axes) > len(panels):
        axes[-1].legend(handles, labels, fontsize=7, loc="center")
    else:
        axes[-1].legend(fontsize=7)
    setting = ", ".join([*([f"lr {config['lr']}"] if "lr" in shared else []), f"batch {config['batch_size']}",
                         f"{config['image_size']}x{config['image_size']}", *([f"init={init}"] if init else [])])
    fig.suptitle(ascii_text(f"First {config['steps']} steps, {setting} ({presets.pop()} preset)"), fontsize=10)
    fig.tight_layout()
    return fig


def full_run_outcome(run, num_classes=10):
    """How a whole training run ended: ``learned``, ``diverged``, ``collapsed`` or ``never started``.

    ``diverged``: its loss or weights became NaN or infinite and ``train_ch6`` stopped it. Otherwise it
    learned when its final test accuracy is above chance (:func:`d2l_local.train.chance_level`), collapsed
    when it ended at chance after some epoch's train or test accuracy was above it, and never started when
    no epoch was.
    """
    level = chance_level(num_classes)
    if run.get("diverged"):
        return "diverged"
    if run["final_test_acc"] >= level:
        return "learned"
    started = any(max(epoch["train_acc"], epoch["test_acc"]) >= level for epoch in run["history"])
    return "collapsed" if started else "never started"


def full_runs(record):
    """One row per run of a record of whole runs (``full_run_stability``): its outcome, the epoch where it
    failed (the epoch it diverged in, or its first epoch back at chance), its best test accuracy over the
    finished epochs, and its final test accuracy (of the network as training left it)."""
    level, rows = chance_level(10), {}
    for run in record["runs"]:
        outcome, history = full_run_outcome(run), run["history"]
        failed = (len(history) + 1 if outcome == "diverged"
                  else next(e["epoch"] for e in history if e["test_acc"] < level) if outcome == "collapsed"
                  else None)
        rows[run["variant"], run["seed"]] = {
            "outcome": outcome, "failed in epoch": failed, "epochs finished": len(history),
            "best test acc": round(max((e["test_acc"] for e in history), default=math.nan), 4),
            "final test acc": round(run["final_test_acc"], 4)}
    table = pd.DataFrame.from_dict(rows, orient="index").astype({"failed in epoch": "Int64"})
    table.index.names = ["variant", "seed"]
    return table


def full_run_summary(record):
    """Per variant: how many runs learned, diverged, collapsed or never started (each "k of n"), and the
    final test accuracy of the runs that learned (mean, min, max)."""
    runs, rows = full_runs(record), {}
    for variant in record["variants"]:
        mine = runs.loc[variant]
        learned = mine.loc[mine["outcome"] == "learned", "final test acc"]
        rows[variant] = {**{f"{outcome} (of n)": f"{(mine['outcome'] == outcome).sum()} of {len(mine)}"
                            for outcome in ("learned", "diverged", "collapsed", "never started")},
                         "learned: test acc mean": round(learned.mean(), 4) if len(learned) else None,
                         "learned: test acc min": learned.min() if len(learned) else None,
                         "learned: test acc max": learned.max() if len(learned) else None}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "variant"
    return table


def plot_full_runs(record, key="test_acc"):
    """One panel per variant, one line per run (colour: seed) over the epochs; for ``test_acc`` a cross
    marks the accuracy of the network a diverged run left. Returns the figure."""
    variants = record["variants"]
    fig, axes = plt.subplots(1, len(variants), figsize=(1.2 + 2.6 * len(variants), 3.0), sharey=True,
                             squeeze=False)
    for ax, variant in zip(axes[0], variants):
        for run in runs_of(record, variant):
            epochs = [e["epoch"] for e in run["history"]]
            line, = ax.plot(epochs, [e[key] for e in run["history"]], marker=".", label=f"seed {run['seed']}")
            if run.get("diverged") and key == "test_acc":
                ax.plot(len(epochs) + 1, run["final_test_acc"], marker="x", markersize=9, color=line.get_color())
        ax.set_title(ascii_text(variant), fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ascii_text(key.replace("_", " ")))
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(ascii_text(f"{record['experiment']} ({record['preset']} preset); x: where a run diverged"),
                 fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["results_folder", "load", "runs_of", "variant_stats", "summary", "compare", "compare_table",
           "describe_change", "pool", "closed_class_scores", "stalled_seeds", "without_seeds", "plot_curves",
           "describe_provenance", "stability_summary", "stability_runs", "plot_stability", "full_run_outcome",
           "full_runs", "full_run_summary", "plot_full_runs"]
