"""d2l_local.results on small synthetic records (no training, no data)."""

import json
import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from d2l_local import results  # noqa: E402

PROVENANCE = {"commit": "0123456789abcdef", "dirty": False, "device": "CPU: test", "torch": "2.x",
              "d2l_local": "0.1.0", "python": "3.x", "date": "2026-01-01T00:00:00+00:00", "command": "test"}


def make_run(variant, seed, accs, train_acc, params, flops, seconds, train_acc_eval=None):
    history = [dict(epoch=i + 1, train_loss=1.0 / (i + 1), train_acc=train_acc, test_acc=acc, img_per_s=100.0,
                    seconds=seconds) for i, acc in enumerate(accs)]
    return {"variant": variant, "model": "paper", "image_size": 28, "options": {}, "config": {}, "num_1x1": 2,
            "seed": seed, "params": params, "training_flops_per_image": flops, "history": history,
            "final_test_acc": accs[-1], "final_train_acc": train_acc, "seconds_per_epoch": seconds,
            "final_train_acc_eval": train_acc if train_acc_eval is None else train_acc_eval,
            "wall_seconds": seconds * len(accs), "precision": "bf16", "provenance": PROVENANCE}


@pytest.fixture
def record():
    runs = [make_run("a", 0, [0.5, 0.80], 0.85, 1000, 2e9, 10.0),
            make_run("a", 1, [0.6, 0.82], 0.86, 1000, 2e9, 12.0),
            make_run("b", 0, [0.4, 0.70], 0.70, 500, 1e9, 5.0),
            make_run("b", 1, [0.5, 0.74], 0.60, 500, 1e9, 7.0, train_acc_eval=0.72)]
    return {"experiment": "demo", "description": "demo", "preset": "cpu", "provenance": PROVENANCE,
            "config": {"epochs": 2}, "seeds": [0, 1], "variants": ["a", "b"], "runs": runs}


@pytest.fixture
def stability():
    def run(init, seed, stuck):
        acc = 0.1 if stuck else 0.6
        return {"init": init, "seed": seed, "steps": 40, "window": 20, "loss_curve": [2.3, 2.303 if stuck else 1.2],
                "acc_curve": [0.1, acc], "final_window_acc": acc, "stuck": stuck, "nonfinite": False,
                "dead": stuck and seed == 0, "zero_score_curve": [0.5, 1.0 if stuck and seed == 0 else 0.2],
                "seconds": 1.0, "precision": "bf16"}

    return {"experiment": "stability", "preset": "cpu", "provenance": PROVENANCE,
            "config": {"lr": 0.1, "batch_size": 128, "image_size": 224, "params": 1, "stuck_below": 0.2,
                       "steps": 40, "seeds": [0, 1], "window": 20},
            "runs": [run("xavier", 0, True), run("xavier", 1, False), run("kaiming", 0, False),
                     run("kaiming", 1, False)]}


def test_load_reads_the_folder_and_names_the_command(tmp_path, record, monkeypatch):
    (tmp_path / "demo.json").write_text(json.dumps(record))
    assert results.load("demo", folder=tmp_path) == record
    monkeypatch.setenv("D2L_LOCAL_RESULTS", str(tmp_path))
    assert results.load("demo")["variants"] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="python -m d2l_local experiment missing --preset cpu"):
        results.load("missing")


def test_summary_rows_follow_the_variants(record):
    table = results.summary(record)
    assert list(table.index) == ["a", "b"]
    assert list(table.columns) == list(results.SUMMARY_COLUMNS)
    a = table.loc["a"]
    assert a["seeds"] == 2
    assert a["test acc mean"] == pytest.approx(0.81)
    assert a["test acc std"] == pytest.approx(0.0141, abs=1e-4)
    assert (a["test acc min"], a["test acc max"]) == (0.80, 0.82)
    assert a["train-test gap"] == pytest.approx(0.045)
    assert a["params"] == 1000
    assert a["training GFLOPs/image"] == pytest.approx(2.0)
    assert "seconds/epoch" not in table.columns  # runs timed at different moments do not compare
    assert table.loc["b", "train-test gap"] == pytest.approx(-0.01)


def test_compare_reports_differences_ratios_and_overlap(record):
    c = results.compare(record, "a", "b")
    assert c["acc_diff"] == pytest.approx(0.72 - 0.81)
    assert c["spread"] == pytest.approx(0.04)
    assert c["ranges_overlap"] is False
    assert c["params_ratio"] == pytest.approx(0.5)
    assert c["flops_ratio"] == pytest.approx(0.5)
    assert "time_ratio" not in c
    assert (c["paired"], c["wins"]) == (2, 0)
    assert c["paired_diff_mean"] == pytest.approx(((0.70 - 0.80) + (0.74 - 0.82)) / 2)
    assert c["paired_diff_std"] == pytest.approx(0.0141, abs=1e-4)
    # mean -0.09, sd 0.01414 over 2 seeds: t(0.975, 1 dof) = 12.706, half-width 12.706 * 0.01414 / sqrt(2) = 0.127
    assert c["paired_diff_ci95"] == pytest.approx((-0.09 - 0.127, -0.09 + 0.127), abs=1e-3)
    assert results.compare(record, "b", "a")["wins"] == 2
    assert results.compare(record, "a", "a")["ranges_overlap"] is True
    with pytest.raises(KeyError, match="variants are"):
        results.compare(record, "a", "zzz")


def test_describe_change_is_one_sentence_from_the_record(record):
    text = results.describe_change(record, "a", "b")
    assert text.startswith("a -> b: mean test accuracy 0.8100 -> 0.7200 (-9.00 points, 2 seeds)")
    assert "beyond the seed spread" in text and "1,000 -> 500 (x0.50)" in text
    # the interval: -9.00 ± 12.71 (t(0.975, 1 dof) = 12.706, see the test above)
    assert ("b is higher from 0 of the 2 seeds both ran from (per-seed difference -9.00 ± 1.41 points, 95% "
            "confidence interval of its mean -21.71 to +3.71 points)") in text
    assert "within the seed spread" in results.describe_change(record, "a", "a")
    one_seed = results.without_seeds(record, record["seeds"][1:])
    assert "(per-seed difference -10.00 ± 0.00 points);" in results.describe_change(one_seed, "a", "b")


def test_compare_table_says_what_describe_change_says(record):
    table = results.compare_table(record, [("a", "b"), ("b", "a")])
    assert list(table.index) == [("a", "b"), ("b", "a")]
    assert table.loc[("a", "b")].to_dict() == {
        "test acc base": 0.81, "test acc other": 0.72, "points": -9.0, "other higher from": "0 of 2 seeds",
        "per-seed points": "-9.00 ± 1.41", "per-seed 95% interval": "-21.71 to +3.71", "seed spread": "beyond"}
    assert table.loc[("b", "a"), "other higher from"] == "2 of 2 seeds"
    assert results.compare_table(record, [("a", "a")]).loc[("a", "a"), "seed spread"] == "within"
    one_seed = results.without_seeds(record, record["seeds"][1:])
    assert results.compare_table(one_seed, [("a", "b")]).loc[("a", "b"), "per-seed 95% interval"] == ""


def test_plot_curves_draws_one_line_and_band_per_variant(record):
    fig = results.plot_curves(record)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.55, 0.81])
    assert len(ax.collections) == 2  # the min..max bands
    assert all(t.get_text().isascii() for t in fig.findobj(matplotlib.text.Text))
    matplotlib.pyplot.close(fig)
    only = results.plot_curves(record, variants=["b"])
    assert [line.get_label() for line in only.axes[0].get_lines()] == ["b"]
    matplotlib.pyplot.close(only)


def test_figures_refuse_non_ascii_labels(record):
    record["variants"] = ["a", "宽"]
    record["runs"][2]["variant"] = record["runs"][3]["variant"] = "宽"
    with pytest.raises(ValueError, match="ASCII"):
        results.plot_curves(record)
    matplotlib.pyplot.close("all")


def test_describe_provenance_is_one_line(record):
    line = results.describe_provenance(record)
    assert "\n" not in line
    for part in ("results/demo.json", "'cpu'", "CPU: test", "0123456789", "2026-01-01", "bf16"):
        assert part in line
    record["provenance"] = {**PROVENANCE, "dirty": True}
    assert "uncommitted" in results.describe_provenance(record)
    assert "devices" not in line and "device CPU: test" in line


def test_describe_provenance_names_every_machine_that_trained_runs(record):
    """Kept runs trained elsewhere are not credited to the machine that wrote the record."""
    record["runs"][2]["provenance"] = {**PROVENANCE, "device": "CPU: other"}
    line = results.describe_provenance(record)
    assert "devices CPU: test for 3 runs, CPU: other for 1 run" in line


def test_stability_summary_counts_stuck_runs(stability):
    table = results.stability_summary(stability)
    assert list(table.index) == ["xavier", "kaiming"]
    assert table.loc["xavier", "stuck (of n)"] == "1 of 2"
    assert table.loc["kaiming", "stuck (of n)"] == "0 of 2"
    assert table.loc["kaiming", "diverged (of n)"] == "0 of 2"
    assert table.loc["xavier", "dead (of n)"] == "1 of 2" and table.loc["kaiming", "dead (of n)"] == "0 of 2"
    assert table.loc["kaiming", "last-window acc min"] == pytest.approx(0.6)
    fig = results.plot_stability(stability)
    assert [ax.get_title() for ax in fig.axes] == ["init=xavier", "init=kaiming"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [20, 40]
    matplotlib.pyplot.close(fig)


def test_plot_stability_compares_recipes_one_panel_per_record(stability):
    slower = {**stability, "config": {**stability["config"], "lr": stability["config"]["lr"] / 2}}
    fig = results.plot_stability({"seeds' lr": stability, "half lr": slower}, "acc_curve", init="kaiming")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["seeds' lr", "half lr"]
    assert [len(ax.get_lines()) for ax in fig.axes[:2]] == [2, 2]  # the kaiming runs only
    assert "init=kaiming" in fig.get_suptitle() and " lr " not in fig.get_suptitle()  # the lr differs
    matplotlib.pyplot.close(fig)
    other_window = {**stability, "config": {**stability["config"], "window": 5}}
    with pytest.raises(ValueError, match="must share"):
        results.plot_stability({"a": stability, "b": other_window})
    matplotlib.pyplot.close("all")


def test_stability_summary_tells_runs_that_started_and_collapsed_from_runs_that_never_started(stability):
    never, fine = stability["runs"][:2]
    collapsed = {**fine, "seed": 2, "acc_curve": [0.6, 0.1], "final_window_acc": 0.1, "stuck": True}
    slipped = {**fine, "seed": 3, "acc_curve": [0.25, 0.18], "final_window_acc": 0.18, "stuck": True}
    table = results.stability_summary({**stability, "runs": [never, fine, collapsed, slipped]})
    assert table.loc["xavier", "started (of n)"] == "3 of 4"
    assert table.loc["xavier", "stuck (of n)"] == "3 of 4"
    assert table.loc["xavier", "collapsed (of n)"] == "1 of 4"  # back at chance, not just below the threshold


def test_stability_runs_names_each_outcome_the_spike_after_the_best_window_and_closed_channels(stability):
    never, fine = stability["runs"][:2]
    closed = [{"block": b, "layer": i, "channels": w, "closed": c}
              for b, w, counts in ((1, 96, (0, 0, 1)), (2, 10, (10, 5, 1))) for i, c in enumerate(counts, 1)]
    collapsed = {**fine, "seed": 2, "acc_curve": [0.3, 0.6, 0.1], "loss_curve": [2.2, 1.2, 2.3],
                 "max_loss_curve": [2.4, 1.5, 3.1],
                 "final_window_acc": 0.1, "stuck": True, "closed_channels_at_end": closed}
    table = results.stability_runs({**stability, "runs": [never, fine, collapsed]})
    assert list(table.index) == [("xavier", 0), ("xavier", 1), ("xavier", 2)]
    assert list(table["outcome"]) == ["dead", "learning", "collapsed"]
    row = table.loc[("xavier", 2)]
    assert (row["best window acc"], row["best by step"], row["last window acc"]) == (0.6, 40, 0.1)
    assert row["best window loss"] == 1.2
    assert (row["largest step loss after best"], row["by step"]) == (3.1, 60)
    assert (row["block 1 closed"], row["block 2 closed"]) == ("0/0/1 of 96", "10/5/1 of 10")
    never_started = {**never, "dead": False, "zero_score_curve": [0.5, 0.5]}
    assert results.stability_runs({**stability, "runs": [never_started]})["outcome"].tolist() == ["never started"]
    diverged = {**never, "dead": False, "nonfinite": True, "loss_curve": [2.9, float("nan")],
                "max_loss_curve": [40.0, float("nan")]}
    row = results.stability_runs({**stability, "runs": [diverged]}).iloc[0]
    assert row["outcome"] == "diverged" and row["by step"] == 40  # the first window whose step loss is NaN
    assert (row["best window acc"], row["best by step"]) == (0.1, 20)  # the best before it diverged
    late = {**diverged, "acc_curve": [0.1, 0.3, 0.5], "loss_curve": [2.3, 2.0, float("nan")],
            "max_loss_curve": [2.4, 2.1, float("inf")], "closed_channels_at_end": closed}
    table = results.stability_runs({**stability, "runs": [late]})
    assert (table.iloc[0]["best window acc"], table.iloc[0]["by step"]) == (0.3, 60)  # not the window after
    assert "block 1 closed" not in table.columns  # NaN weights: closed counts mean nothing
    first = {**diverged, "max_loss_curve": [float("nan"), float("nan")]}
    assert pd.isna(results.stability_runs({**stability, "runs": [first]}).iloc[0]["best window acc"])


def test_stability_summary_warns_about_an_interrupted_record(stability):
    with pytest.warns(UserWarning, match="interrupted"):
        results.stability_summary({**stability, "complete": False})


def test_provenance_dirty_means_changed_code_not_written_results(tmp_path, monkeypatch):
    import subprocess

    from d2l_local import provenance

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    (tmp_path / "results" / "a.json").write_text('{"new": 1}')
    assert provenance.provenance("cpu")["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.provenance("cpu")["dirty"] is True


def test_stability_plot_and_summary_count_diverged_runs(stability):
    runs = [{**stability["runs"][2], "nonfinite": True, "loss_curve": [2.9, float("nan")]}, stability["runs"][3]]
    record = {**stability, "runs": runs}
    assert results.stability_summary(record).loc["kaiming", "diverged (of n)"] == "1 of 2"
    fig = results.plot_stability(record)
    assert fig.axes[0].get_title() == "init=kaiming (1 diverged)"
    matplotlib.pyplot.close(fig)


def test_full_runs_tell_how_each_whole_run_ended():
    diverged = {**make_run("preset", 1, [0.6], 0.6, 1, 1.0, 1.0), "final_test_acc": 0.1,
                "diverged": "the loss or the weights became NaN or infinite in epoch 2"}
    runs = [make_run("preset", 0, [0.5, 0.8], 0.8, 1, 1.0, 1.0), diverged,
            make_run("preset", 2, [0.7, 0.1, 0.1], 0.1, 1, 1.0, 1.0),  # started in epoch 1, at chance from epoch 2
            make_run("clipped", 0, [0.1, 0.1], 0.1, 1, 1.0, 1.0),      # never above chance
            make_run("clipped", 1, [0.6, 0.9], 0.9, 1, 1.0, 1.0)]
    record = {"experiment": "full_run_stability", "preset": "gpu", "provenance": PROVENANCE,
              "variants": ["preset", "clipped"], "runs": runs}
    table = results.full_runs(record)
    assert table["outcome"].tolist() == ["learned", "diverged", "collapsed", "never started", "learned"]
    assert table["failed in epoch"].tolist()[:3] == [pd.NA, 2, 2]
    assert table.loc[("preset", 1), "best test acc"] == 0.6 and table.loc[("preset", 1), "final test acc"] == 0.1
    summary = results.full_run_summary(record)
    assert summary.loc["preset", "learned (of n)"] == "1 of 3" and summary.loc["preset", "diverged (of n)"] == "1 of 3"
    assert summary.loc["clipped", "never started (of n)"] == "1 of 2"
    assert summary.loc["clipped", "learned: test acc mean"] == 0.9  # of the runs that learned only
    fig = results.plot_full_runs(record)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3 + 1  # three runs, a cross for the diverged one
    assert len(results.plot_full_runs(record, "train_loss").axes[0].lines) == 3


def test_closed_class_scores_is_the_mean_share_of_zero_scores_per_run(record):
    for run, shares in zip(record["runs"], ([0.0] * 10, [1.0] * 10, [0.5] * 4 + [0.0] * 6, [0.1] * 10)):
        run["zero_scores_by_class_at_end"] = shares
    table = results.closed_class_scores(record)
    assert table.index.tolist() == ["a", "b"] and table.columns.tolist() == [0, 1]
    assert table.loc["a"].tolist() == [0.0, 1.0] and table.loc["b"].tolist() == pytest.approx([0.2, 0.1])
    # a ended with every score zero from seed 1: stalled; b at most 20% of them
    assert results.stalled_seeds(record) == [1] and results.stalled_seeds(record, ("b",)) == []
    record["runs"][2]["zero_scores_by_class_at_end"] = [0.6] * 10
    assert results.stalled_seeds(record) == [0, 1] and results.stalled_seeds(record, ["b"]) == [0]
    learned = results.without_seeds(record, [1])
    assert learned["seeds"] == [0] and {run["seed"] for run in learned["runs"]} == {0}
    assert results.compare(learned, "a", "b")["paired"] == 1 and record["seeds"] == [0, 1]
    assert all(math.isnan(end) for end in results.compare(learned, "a", "b")["paired_diff_ci95"])  # one seed
    assert results.stalled_seeds(record, []) == []
    del record["runs"][1]["zero_scores_by_class_at_end"]  # a run kept from before it was recorded
    table = results.closed_class_scores(record)
    assert math.isnan(table.loc["a", 1]) and table.loc["a", 0] == 0.0
    with pytest.raises(ValueError, match=r"without zero class scores.*\('a', 1\).*--fresh"):
        results.stalled_seeds(record)
    assert results.stalled_seeds(record, ["b"]) == [0]
    record["runs"][3]["seed"] = 2  # b ran from seeds 0 and 2, a from 0 and 1: a missing run is not an old one
    assert results.stalled_seeds(results.without_seeds(record, [1]), ["a", "b"]) == [0]


def test_pool_joins_the_runs_of_shared_variants_and_names_every_file(record):
    more = {**record, "experiment": "demo_seeds", "variants": ["b", "c"], "seeds": [2],
            "provenance": {**PROVENANCE, "date": "2026-02-01T00:00:00+00:00"},
            "runs": [make_run("b", 2, [0.5, 0.78], 0.75, 500, 1e9, 5.0), make_run("c", 2, [0.5, 0.9], 0.9, 1, 1, 1.0)]}
    pooled = results.pool(record, more)
    assert pooled["variants"] == ["b"] and pooled["seeds"] == [0, 1, 2]
    assert [run["seed"] for run in results.runs_of(pooled, "b")] == [0, 1, 2]
    assert results.variant_stats(pooled, "b")["acc_mean"] == pytest.approx((0.70 + 0.74 + 0.78) / 3)
    assert pooled["provenance"]["date"].startswith("2026-02")
    assert results.pool(more, record)["provenance"]["date"].startswith("2026-02")  # the newest, not the last
    assert results.pool(more, record)["variants"] == ["b"]
    again = results.pool(pooled, {**more, "experiment": "demo_more", "runs": []})
    assert results.describe_provenance(again).startswith(
        "Sources: results/demo.json and results/demo_seeds.json and results/demo_more.json,")
    assert results.describe_provenance(pooled).startswith(
        "Sources: results/demo.json and results/demo_seeds.json, preset 'cpu'")
    with pytest.raises(ValueError, match=r"same variant and seed.*\('b', 0\)"):
        results.pool(record, {**more, "runs": [make_run("b", 0, [0.5, 0.7], 0.7, 500, 1e9, 5.0)]})
    other_recipe = make_run("b", 2, [0.5, 0.78], 0.75, 500, 1e9, 5.0) | {"config": {"epochs": 3}}
    with pytest.raises(ValueError, match="'b' was trained with different recipes"):
        results.pool(record, {**more, "runs": [other_recipe]})
    with pytest.raises(ValueError, match="share no variant"):
        results.pool(record, {**more, "variants": ["c"]})
    with pytest.raises(ValueError, match="two records or more"):
        results.pool(record)
