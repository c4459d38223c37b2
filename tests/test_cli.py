"""``python -m d2l_local``, and the package metadata."""

import json
import subprocess
import sys
import time
import types

import pytest
import torch
from test_data import fake_urlopen, gz_of, nothing_installed  # noqa: F401 - nothing_installed: a fixture

from d2l_local import cli, experiments  # experiments: imported before any test fakes train.train_ch6, which it binds
from d2l_local import data as data_mod
from d2l_local.models import (
    INITS,
    last_block,
    nin_blocks,
    product_bias_step_gains,
    product_step_gains,
    product_step_operators,
)

CLOSED_PORT = "http://127.0.0.1:9"


@pytest.fixture
def subprocess_env(subprocess_env):
    """conftest's, with proxies at a closed port, so that a child process cannot download either."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        subprocess_env[name] = CLOSED_PORT
    for name in ("no_proxy", "NO_PROXY"):
        subprocess_env.pop(name, None)
    return subprocess_env


def run_module(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "d2l_local", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_data_command_says_where_the_data_is(real_data_dir, subprocess_env, tmp_path):
    subprocess_env["FASHION_MNIST_DIR"] = str(real_data_dir)
    result = run_module(["data", "--torchvision-root", str(tmp_path / "data")], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(real_data_dir) in result.stdout
    assert "verified" in result.stdout and "60000 train" in result.stdout and "10000 test" in result.stdout
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    assert str(raw_dir) in result.stdout
    assert len(list(raw_dir.iterdir())) == 4


def test_train_quick_mode_writes_json_history(subprocess_env, tmp_path):
    subprocess_env["D2L_LOCAL_QUICK"] = "1"
    out = tmp_path / "out.json"
    result = run_module(["train", "--model", "paper", "--epochs", "1", "--json", str(out), "--device", "cpu",
                         "--quiet"], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "QUICK MODE" in result.stdout
    history = json.loads(out.read_text())
    assert history["config"]["quick"] is True
    assert history["config"]["image_size"] == 28
    assert [r["epoch"] for r in history["epochs"]] == [1]
    assert 0 <= history["epochs"][0]["test_acc"] <= 1
    final = json.loads(result.stdout.strip().splitlines()[-1])  # the last line is the final record
    assert final == history["epochs"][-1]


def test_stability_experiment_quick_mode_writes_its_record(subprocess_env, tmp_path):
    subprocess_env.update(D2L_LOCAL_QUICK="1", D2L_LOCAL_RESULTS=str(tmp_path / "results"))
    result = run_module(["experiment", "stability", "--seeds", "0", "--device", "cpu"], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "results" / "stability.json").read_text())
    assert [run["init"] for run in record["runs"]] == list(INITS)
    assert record["complete"] is True
    assert record["config"]["steps"] == 4 and record["provenance"]["quick"] is True
    for run in record["runs"]:
        assert len(run["loss_curve"]) == len(run["zero_score_curve"]) == len(run["max_loss_curve"]) == 2
        assert all(peak >= mean for peak, mean in zip(run["max_loss_curve"], run["loss_curve"]))
        assert [layer["channels"] for layer in run["closed_channels_at_end"]][-3:] == [10, 10, 10]
        assert run["dead"] == (run["zero_score_curve"][-1] == 1.0)
        assert run["provenance"]["quick"] is True
        assert "grad_norm_median_curve" not in run  # recorded only where the gradient is clipped

    # --only runs one initialisation again and keeps the other runs as they were.
    result = run_module(["experiment", "stability", "--seeds", "0", "--device", "cpu", "--only", "xavier"],
                        subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[stability]") == 1
    rerun = json.loads((tmp_path / "results" / "stability.json").read_text())
    assert [run["init"] for run in rerun["runs"]] == [run["init"] for run in record["runs"]]
    assert rerun["complete"] is True
    for old, new in zip(record["runs"], rerun["runs"]):
        if old["init"] == "xavier":
            assert new["provenance"]["date"] >= old["provenance"]["date"]
            assert new["loss_curve"] == old["loss_curve"]  # same seed, same device: the same run
        else:
            assert new == old

    # --only cannot mix a record with another config, and names a known initialisation.
    for extra, message in ((["--seeds", "1", "--only", "xavier"], "another preset or config"),
                           (["--seeds", "0", "--only", "he"], "no initialisation 'he'")):
        result = run_module(["experiment", "stability", "--device", "cpu", *extra], subprocess_env, tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert json.loads((tmp_path / "results" / "stability.json").read_text()) == rerun


@pytest.mark.parametrize("name", ["stability_clip", "stability_half_lr", "stability_unit_inputs"])
def test_a_stability_variant_writes_its_own_record_and_leaves_stability_alone(subprocess_env, tmp_path, name):
    from d2l_local.experiments import STABILITY
    from d2l_local.stability import LR

    change = STABILITY[name]
    subprocess_env.update(D2L_LOCAL_QUICK="1", D2L_LOCAL_RESULTS=str(tmp_path / "results"))
    result = run_module(["experiment", name, "--seeds", "0", "1", "--device", "cpu"], subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"[{name}]") == 2 * len(change["inits"])
    assert not (tmp_path / "results" / "stability.json").exists()
    record = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert record["experiment"] == name and record["complete"] is True
    assert record["config"]["lr"] == change.get("lr", LR) and f"lr {record['config']['lr']}" in record["description"]
    assert record["config"].get("clip_grad_norm") == change.get("clip_grad_norm")
    assert ("clipped" in record["description"]) == ("clip_grad_norm" in change)
    assert record["config"].get("standardize", True) == change.get("standardize", True)
    assert ("pixels in [0, 1]" in record["description"]) == ("standardize" in change)
    assert [(run["init"], run["seed"]) for run in record["runs"]] == [(i, s) for i in change["inits"] for s in (0, 1)]
    for run in record["runs"]:
        if "clip_grad_norm" not in change:
            assert "grad_norm_median_curve" not in run
            continue
        windows = len(run["loss_curve"])
        assert len(run["grad_norm_median_curve"]) == len(run["grad_norm_max_curve"]) == windows
        assert all(0 <= share <= 1 for share in run["clipped_fraction_curve"])
        assert all(top >= median > 0 for top, median in zip(run["grad_norm_max_curve"], run["grad_norm_median_curve"]))


def test_diverging_run_exits_with_advice_not_a_traceback(subprocess_env, tmp_path):
    subprocess_env["D2L_LOCAL_QUICK"] = "1"
    result = run_module(["train", "--model", "paper", "--lr", "1e6", "--device", "cpu", "--quiet"],
                        subprocess_env, tmp_path)
    assert result.returncode == 2
    assert "smaller" in result.stderr and "Traceback" not in result.stderr


def test_bad_batch_size_exits_with_a_clear_message(subprocess_env, tmp_path):
    result = run_module(["train", "--model", "paper", "--batch-size", "0", "--device", "cpu"],
                        subprocess_env, tmp_path)
    assert result.returncode != 0
    assert "batch_size must be an int, at least 1; got 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv, expected", [
    (["train", "--epochs", "0", "--model", "paper", "--device", "cpu", "--quiet"], "num_epochs must be an int"),
    (["train", "--lr", "-1", "--model", "paper", "--device", "cpu", "--quiet"], "lr must be positive"),
    (["train", "--num-1x1", "7", "--model", "paper", "--device", "cpu", "--quiet"], "num_1x1"),
])
def test_bad_values_exit_2_with_the_reason(argv, expected, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", "resnet"], "invalid choice"),
    (["train", "--epochs", "many"], "invalid int value"),
    (["bench", "--compile", "fastest"], "invalid choice: 'fastest'"),
    ([], "required"),
])
def test_bad_arguments_exit_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.fixture
def fake_training(monkeypatch):
    """Make ``train`` skip the data and the training; returns the keyword arguments train_ch6 got."""
    from d2l_local import data, train

    got = {}

    def train_ch6(net, train_iter, test_iter, num_epochs, lr, device, **kwargs):
        got.update(kwargs, device=device, net=net)
        return types.SimpleNamespace(final={"epoch": num_epochs})

    monkeypatch.setattr(data, "load_data_fashion_mnist", lambda *args, **kwargs: (None, None))
    monkeypatch.setattr(train, "train_ch6", train_ch6)
    return got


@pytest.mark.parametrize("command", [["train"], ["bench"], ["experiment", "stability"]])
@pytest.mark.parametrize("device, gpus, available", [
    ("gpu", 0, "available: cpu"),
    ("cuda", 0, "available: cpu"),
    ("cuda:2", 2, "available: cpu, cuda, cuda:0, cuda:1"),
])
def test_unknown_device_is_a_usage_error_listing_the_devices(command, device, gpus, available, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--device", device])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"no device '{device}' here; {available}" in err and "Traceback" not in err


def test_device_that_exists_is_used(monkeypatch, fake_training):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cli.main(["train", "--model", "paper", "--device", "cuda:1", "--quiet"]) == 0
    assert fake_training["device"] == torch.device("cuda:1")


def test_resume_without_checkpoint_is_a_usage_error(capsys, fake_training):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--model", "paper", "--device", "cpu", "--resume"])
    assert exc.value.code == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    assert fake_training == {}  # nothing was trained


@pytest.mark.parametrize("exists", [False, True])
def test_resume_from_a_missing_checkpoint_starts_fresh_and_says_so(exists, tmp_path, capsys, fake_training):
    checkpoint = tmp_path / "run.pt"
    if exists:
        checkpoint.write_bytes(b"")  # the fake train_ch6 does not read it
    assert cli.main(["train", "--model", "paper", "--device", "cpu", "--quiet",
                     "--checkpoint", str(checkpoint), "--resume"]) == 0
    said = f"no checkpoint at {checkpoint}, starting fresh" in capsys.readouterr().out
    assert said is not exists
    assert fake_training["checkpoint"] == str(checkpoint) and fake_training["resume"] is True


def test_data_command_reports_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    assert cli.main(["data"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "not a directory" in err


def test_data_fetch_does_not_download_data_that_is_there(real_data_dir, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(data_mod.urllib.request, "urlopen", fake_urlopen(lambda name, url: b"", calls))
    assert cli.main(["data", "--fetch"]) == 0
    assert calls == []
    out = capsys.readouterr().out
    assert f"Fashion-MNIST: {real_data_dir} (verified" in out


@pytest.mark.usefixtures("nothing_installed")
def test_data_fetch_downloads_when_no_folder_has_the_data(real_data_dir, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(data_mod.urllib.request, "urlopen",
                        fake_urlopen(lambda name, url: gz_of(real_data_dir, name), calls))
    assert cli.main(["data", "--fetch"]) == 0
    assert len(calls) == 4
    assert f"Fashion-MNIST: {data_mod.cache_dir()} (verified" in capsys.readouterr().out


@pytest.mark.usefixtures("nothing_installed")
def test_data_fetch_offline_with_no_data_says_what_to_install(capsys):
    assert cli.main(["data", "--fetch"]) == 2
    err = capsys.readouterr().err
    assert "downloading it failed" in err and "apt-get install dataset-fashion-mnist" in err


def test_pyproject_does_not_depend_on_torch_torchvision_numpy(repo_root):
    """Neither directly nor through a package that needs numpy (matplotlib, pandas: the `book` extra)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["dependencies"]:
        name = requirement.split(";")[0]
        for sep in "<>=!~[ (":
            name = name.split(sep)[0]
        names.add(name.strip().lower().replace("_", "-"))
    assert names  # parsed something
    assert not names & {"torch", "torchvision", "numpy", "matplotlib", "pandas", "scipy"}, names
    assert set(project["optional-dependencies"]["book"]) == {"matplotlib", "pandas"}


def test_training_and_the_command_line_import_without_the_book_extra(subprocess_env):
    """Blocking matplotlib and pandas: the package, train_ch6 and the CLI still import (plots are the book's)."""
    code = ("import sys; sys.modules.update(matplotlib=None, pandas=None); "
            "import d2l_local, d2l_local.cli, d2l_local.bench, d2l_local.experiments; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_experiment_seeds_cache_and_record(monkeypatch, tmp_path):

    monkeypatch.setenv("D2L_LOCAL_RESULTS", str(tmp_path))
    monkeypatch.setattr(experiments, "load_data_fashion_mnist", lambda *args, **kwargs: (None, None))
    trained = []

    def fake_run_one(preset, options, recipe, seed, device, loaders, save_model=None):
        trained.append((tuple(options.items()), seed, recipe["epochs"], recipe["schedule"]))
        return {"num_1x1": options.get("num_1x1", 2), "seed": seed, "final_test_acc": 0.5,
                "final_train_acc_eval": 0.6, "params": 1, "training_flops_per_image": 1.0, "history": []}

    monkeypatch.setattr(experiments, "run_one", fake_run_one)
    [path] = experiments.run_experiment("conv1x1_count", "cpu")
    record = json.loads(path.read_text())
    assert record["seeds"] == list(range(10)) and len(record["runs"]) == 4 * 10 == len(trained)
    [path] = experiments.run_experiment("kernel_3x3", "cpu")
    assert json.loads(path.read_text())["seeds"] == list(experiments.PRESETS["cpu"]["seeds"])
    # kernel_1x1=1 is conv1x1_count's num_1x1=2: the same runs, taken from the cache
    assert len(trained) == 40 + 3
    since = time.time()
    list(experiments.run_experiment("kernel_3x3", "cpu", fresh=since))  # trains every run again
    assert len(trained) == 40 + 3 + 6
    list(experiments.run_experiment("gap_vs_fc", "cpu", fresh=since))  # the baseline was trained since
    assert len(trained) == 40 + 3 + 6 + 3
    kept = next(f for f in sorted((tmp_path / "runs").glob("*.json"))  # a num_1x1=0 run kept by a version
                if json.loads(f.read_text())["num_1x1"] == 0)              # that recorded less
    kept.write_text(json.dumps({k: v for k, v in json.loads(kept.read_text()).items() if k != "final_train_acc_eval"}))
    list(experiments.run_experiment("conv1x1_count", "cpu"))
    assert len(trained) == 40 + 3 + 6 + 3 + 1
    list(experiments.run_experiment("conv1x1_count_long", "cpu"))  # same networks and seeds, longer recipe:
    assert len(trained) == 40 + 3 + 6 + 3 + 1 + 4 * 4                # no run of conv1x1_count is reused
    assert {run[2:] for run in trained[-16:]} == {(10, "cosine")}
    # one and two layers are conv1x1_count's runs (the long ones conv1x1_count_long's); new: the linear pair, one
    # and two layers from its start, and one layer from its start with the pair's pace
    new = [(("linear_1x1", True),), (("num_1x1", 1),), (), (("num_1x1", 1),)]
    [path] = experiments.run_experiment("linear_1x1", "cpu")
    assert trained[-20:] == [(options, seed, 2, "constant") for options in new for seed in range(5)]
    assert len(trained) == 40 + 3 + 6 + 3 + 1 + 4 * 4 + 20 and len(json.loads(path.read_text())["runs"]) == 30
    list(experiments.run_experiment("linear_1x1_long", "cpu"))
    assert trained[-16:] == [(options, seed, 10, "cosine") for options in new for seed in range(4)]
    [path] = experiments.run_experiment("linear_1x1_lr", "cpu")  # at the preset's rate: linear_1x1's runs
    assert len(trained) == 40 + 3 + 6 + 3 + 1 + 4 * 4 + 20 + 16 + 20
    assert json.loads(path.read_text())["variants"] == [
        "num_1x1=1, lr=0.005", "linear_1x1=True, lr=0.005", "num_1x1=1", "linear_1x1=True", "num_1x1=1, lr=0.02",
        "linear_1x1=True, lr=0.02"]
    [path] = experiments.run_experiment("linear_1x1_paced", "cpu")  # the first three: linear_1x1's runs
    assert len(trained) == 40 + 3 + 6 + 3 + 1 + 4 * 4 + 20 + 16 + 20 + 4 * 5
    assert len(json.loads(path.read_text())["runs"]) == 7 * 5
    [path] = experiments.run_experiment("linear_1x1_paced_long", "cpu")  # new: the pace in the first two blocks
    assert trained[-4:] == [((("num_1x1", 1),), seed, 10, "cosine") for seed in range(4)]
    assert len(json.loads(path.read_text())["runs"]) == 4 * 4
    count = len(trained)
    [path] = experiments.run_experiment("linear_1x1_matrix", "cpu")  # new: the whole step in 3 ways
    assert len(trained) == count + 3 * 5 and len(json.loads(path.read_text())["runs"]) == 7 * 5
    [path] = experiments.run_experiment("linear_1x1_matrix_long", "cpu")  # new: in every block, in the last
    assert trained[count + 15:] == [((("num_1x1", 1),), seed, 10, "cosine") for seed in range(4)] * 2
    assert len(json.loads(path.read_text())["runs"]) == 4 * 4
    [path] = experiments.run_experiment("linear_1x1_matrix_seeds", "cpu")  # new: seeds 5 to 9
    assert trained[-15:] == [(options, seed, 2, "constant") for options in [(("linear_1x1", True),), (("num_1x1", 1),),
                                                                           (("num_1x1", 1),)] for seed in range(5, 10)]
    [path] = experiments.run_experiment("conv1x1_count_long_seeds", "cpu")  # one and two layers, seeds 4 to 11
    assert trained[-16:] == [(options, seed, 10, "cosine")
                            for options in [(("num_1x1", 1),), (("num_1x1", 2),)] for seed in range(4, 12)]
    assert json.loads(path.read_text())["seeds"] == list(range(4, 12))
    count = len(trained)
    [path] = experiments.run_experiment("conv1x1_count_stall", "cpu")  # a start drawn from the run's own seed is
    assert trained[count:] == [((("num_1x1", k),), seed, 2, "constant")  # conv1x1_count's run: new are only the
                               for k in (1, 2) for _ in range(4) for seed in (7, 6)  # draws from another seed
                               ] + [((("num_1x1", 3),), seed, 2, "constant") for _ in range(2) for seed in (6, 7)]
    assert [run["seed"] for run in json.loads(path.read_text())["runs"]] == [6, 7] * 21
    with pytest.raises(ValueError, match="cannot be combined with 'all'"):
        list(experiments.run_experiment("all", "cpu", only="num_1x1=2"))
    with pytest.raises(ValueError, match="stability has no --verify"):
        list(experiments.run_experiment("stability", "cpu", verify=True))
    with pytest.raises(ValueError, match="has no run of kernel_1x1=1 from seed 11"):
        list(experiments.run_experiment("kernel_3x3", "cpu", verify=True, seeds=[11]))


def test_a_variant_with_unstandardised_pixels_trains_on_its_own_loaders(monkeypatch, tmp_path):

    monkeypatch.setenv("D2L_LOCAL_RESULTS", str(tmp_path))
    built = []

    def fake_loaders(*args, standardize=True, **kwargs):
        built.append(standardize)
        return (f"train standardize={standardize}", "test")

    monkeypatch.setattr(experiments, "load_data_fashion_mnist", fake_loaders)
    fed = {}

    def fake_run_one(preset, options, recipe, seed, device, loaders, save_model=None):
        fed.setdefault(loaders[0], set()).add(recipe.get("standardize", True))
        return {"seed": seed, "final_test_acc": 0.5, "final_train_acc_eval": 0.6, "params": 1,
                "training_flops_per_image": 1.0, "history": [], "config": recipe}

    monkeypatch.setattr(experiments, "run_one", fake_run_one)
    [path] = experiments.run_experiment("full_run_stability", "cpu", seeds=[0, 1])
    assert sorted(built) == [False, True]  # one pair of loaders per setting, not per run
    assert fed == {"train standardize=True": {True}, "train standardize=False": {False}}
    record = json.loads(path.read_text())
    assert "standardize=False" in record["variants"] and len(record["runs"]) == 4 * 2


def test_experiment_run_records_eval_mode_train_accuracy(monkeypatch, tmp_path):

    monkeypatch.setenv("D2L_LOCAL_QUICK", "1")
    monkeypatch.setenv("D2L_LOCAL_RESULTS", str(tmp_path))
    loaders = experiments.load_data_fashion_mnist(64, resize=28)
    seen = []

    def spy(net, data_iter, *args, **kwargs):
        seen.append(data_iter)
        return 0.123

    monkeypatch.setattr(experiments, "evaluate_accuracy", spy)
    recipe = {k: experiments.PRESETS["cpu"].get(k, 0.0) for k in experiments.RECIPE_KEYS}
    record = experiments.run_one("cpu", {}, recipe, 0, "cpu", loaders)
    assert record["final_train_acc_eval"] == 0.123
    assert seen == [loaders[0]]  # evaluate_accuracy (eval mode) on the training set
    # closed channels of every ReLU layer, counted on test images: the last is the class maps'
    closed = record["closed_channels_at_end"]
    assert [(row["block"], row["channels"]) for row in closed] == [
        (1, 96), (1, 64), (1, 48), (2, 128), (2, 96), (2, 48), (3, 128), (3, 96), (3, 10)]
    assert all(0 <= row["closed"] <= row["channels"] for row in closed)
    zero = record["zero_scores_by_class_at_end"]
    assert len(zero) == 10 and all(0 <= share <= 1 for share in zero)


@pytest.mark.parametrize("device, expected", [("cpu", (12, 3)), ("cuda", (100, 20))])
def test_bench_steps_default_to_the_device_type(device, expected, monkeypatch):
    from d2l_local import bench

    timed = []
    monkeypatch.setattr(bench, "reference_img_per_s", lambda device, warmup, steps: timed.append((steps, warmup)) or 1)
    monkeypatch.setattr(bench, "d2l_local_img_per_s", lambda device, warmup, steps, *args, **kwargs: 2.0)
    monkeypatch.setattr(bench, "matmul_peak_tflops", lambda device, precision: 1.0)
    monkeypatch.setattr(bench, "device_name", str)
    monkeypatch.setattr(bench, "pick_precision", lambda device: "bf16")
    result = bench.run_bench(device)
    assert timed == [expected] and (result["steps"], result["warmup"]) == expected
    assert bench.run_bench(device, steps=5, warmup=0)["steps"] == 5


@pytest.mark.parametrize("device, speedup, fp32_speedup", [("cpu", None, 2.0), ("cuda", 1.5, None)])
def test_bench_times_a_gpu_without_cudnn_autotune_and_a_cpu_in_fp32_too(device, speedup, fp32_speedup, monkeypatch):
    from d2l_local import bench

    def d2l_local_img_per_s(device, warmup, steps, precision, compile=False, fuse=True, autotune=True):
        return 150.0 if precision == "fp32" else 300.0 if autotune else 200.0

    monkeypatch.setattr(bench, "reference_img_per_s", lambda device, warmup, steps: 100.0)
    monkeypatch.setattr(bench, "d2l_local_img_per_s", d2l_local_img_per_s)
    monkeypatch.setattr(bench, "matmul_peak_tflops", lambda device, precision: 1.0)
    monkeypatch.setattr(bench, "device_name", str)
    monkeypatch.setattr(bench, "pick_precision", lambda device: "bf16")
    monkeypatch.setattr(bench, "HAS_FUSED_CONV", False)
    result = bench.run_bench(device)
    assert result["speedup"] == 3.0 and result["cudnn_autotune_speedup"] == speedup
    assert result["mixed_precision_speedup"] == fp32_speedup
    assert {"device", "reference_img_per_s", "d2l_local_img_per_s", "speedup", "achieved_tflops", "peak_tflops",
            "fraction_of_peak"} <= result.keys()  # what issue #2 asks the JSON line for
    assert result["achieved_tflops"] == pytest.approx(300.0 * result["training_gflop_per_image"] / 1e3, abs=2e-4)
    assert result["fraction_of_peak"] == round(result["achieved_tflops"] / result["peak_tflops"], 3)


@pytest.mark.parametrize("argv, expected", [([], False), (["--compile"], "default"),
                                            (["--compile", "max-autotune"], "max-autotune")])
def test_train_compile_option(argv, expected, fake_training):
    assert cli.main(["train", "--model", "paper", "--device", "cpu", "--quiet", *argv]) == 0
    assert fake_training["compile"] == expected


@pytest.mark.parametrize("argv, expected", [([], False), (["--deterministic"], True)])
def test_train_deterministic_option(argv, expected, fake_training):
    assert cli.main(["train", "--model", "paper", "--device", "cpu", "--quiet", *argv]) == 0
    assert fake_training["deterministic"] is expected


@pytest.mark.parametrize("argv, relus", [([], 3), (["--linear-1x1"], 2)])
def test_train_linear_1x1_option(argv, relus, fake_training):
    assert cli.main(["train", "--model", "paper", "--device", "cpu", "--quiet", *argv]) == 0
    first_block = fake_training["net"][0]
    assert sum(isinstance(layer, torch.nn.ReLU) for layer in first_block) == relus


def test_bench_refuses_impossible_step_counts(capsys):
    assert cli.main(["bench", "--device", "cpu", "--steps", "0"]) == 2
    assert "at least 1 timed step" in capsys.readouterr().err


def test_one_layer_from_the_linear_pairs_start_starts_computing_what_the_pair_does(monkeypatch):
    """The variant "num_1x1=1, start=linear_1x1" hands train_ch6 the same seed's linear pair multiplied out,
    and train_ch6 keeps those weights (init=None): the first two blocks compute what the pair's do. The variant
    "num_1x1=2, start=linear_1x1" gets the pair's weights as they are."""
    from d2l_local import train

    class Started(Exception):
        pass

    nets, scales, bias_scales, operators, sgd = [], [], [], [], train.sgd

    def stop_after_init(net, *args):  # the first thing train_ch6 does after initialising the network
        nets.append(net)
        raise Started

    def recording_sgd(net, lr, momentum, weight_decay, lr_1x1_scale, lr_1x1_bias_scale, precondition_1x1):
        scales.append(lr_1x1_scale)
        bias_scales.append(lr_1x1_bias_scale)
        operators.append(precondition_1x1)
        return sgd(net, lr, momentum, weight_decay, lr_1x1_scale, lr_1x1_bias_scale, precondition_1x1)

    monkeypatch.setattr(train, "_check_input_size", stop_after_init)
    monkeypatch.setattr(train, "sgd", recording_sgd)
    recipe = {k: experiments.PRESETS["cpu"].get(k, 0.0) for k in experiments.RECIPE_KEYS}
    variants = experiments.EXPERIMENTS["linear_1x1"][1]
    for _, options, overrides in variants:
        with pytest.raises(Started):
            experiments.run_one("cpu", options, recipe | overrides, 3, "cpu", (None, None))
    started = dict(zip([label for label, _, _ in variants], nets))
    X = torch.randn(16, 1, 28, 28)

    def first_blocks(label):
        return started[label].eval()[:4](X.contiguous(memory_format=torch.channels_last))

    with torch.no_grad():
        torch.testing.assert_close(first_blocks("num_1x1=1, start=linear_1x1"), first_blocks("linear_1x1=True"),
                                   rtol=1e-4, atol=1e-5)
        assert not torch.allclose(first_blocks("num_1x1=1, start=linear_1x1"), first_blocks("num_1x1=1"))
    assert [p.shape for p in started["num_1x1=1, start=linear_1x1"].parameters()] == [
        p.shape for p in started["num_1x1=1"].parameters()]
    # the paper's pair from the linear pair's start: the same weights, and the ReLU between
    paper, pair = started["num_1x1=2, start=linear_1x1"], started["linear_1x1=True"]
    assert all(torch.equal(a, b) for a, b in zip(paper.parameters(), pair.parameters(), strict=True))
    assert str(paper) == str(started["num_1x1=2"]) != str(pair)
    # one layer from the pair's start with the pair's starting step: the same weights, its 1x1 layers' lr scaled
    fast = "num_1x1=1, start=linear_1x1, lr_1x1=linear_1x1"
    assert all(torch.equal(a, b) for a, b in zip(
        started[fast].parameters(), started["num_1x1=1, start=linear_1x1"].parameters(), strict=True))
    scale = dict(zip([label for label, _, _ in variants], scales))
    assert scale[fast] == product_step_gains(pair) and len(scale[fast]) == 3
    assert 1 < min(scale[fast]) and {scale[label] for label in scale if label != fast} == {1.0}
    for key in ("start", "lr_1x1"):
        with pytest.raises(ValueError, match=f"{key} must be None or 'linear_1x1'"):
            experiments.run_one("cpu", {}, recipe | {key: "paper"}, 0, "cpu", (None, None))
    assert set(bias_scales) == {None}  # the biases move with their weights
    # the pair's pace in some blocks only (the others' 1x1 layers learn at the preset's rate), and the biases at
    # the pace of the pair's bias: 1 in the last block, whose second layer starts at zero
    scales.clear()
    bias_scales.clear()
    paced = experiments.EXPERIMENTS["linear_1x1_paced"][1]
    for _, options, overrides in paced:
        with pytest.raises(Started):
            experiments.run_one("cpu", options, recipe | overrides, 3, "cpu", (None, None))
    gains, bias_gains = scale[fast], product_bias_step_gains(pair)
    assert scales == [1.0, 1.0, gains, [*gains[:2], 1.0], [1.0, 1.0, gains[2]], gains, [1.0, 1.0, gains[2]]]
    assert bias_scales == [None] * 5 + [bias_gains, [1.0, 1.0, 1.0]] and bias_gains[2] == 1.0 < min(bias_gains[:2])
    for bad, message in (({"lr_1x1": "linear_1x1", "lr_1x1_blocks": (3, 4)}, "names blocks 1 to 3, got \\[3, 4\\]"),
                         ({"lr_1x1_blocks": (1,)}, "lr_1x1_blocks needs lr_1x1"),
                         ({"lr_1x1_bias": "linear_1x1"}, "lr_1x1_bias needs lr_1x1='linear_1x1'"),
                         ({"lr_1x1": "linear_1x1_matrix", "lr_1x1_bias": "linear_1x1"},
                          "lr_1x1_bias needs lr_1x1='linear_1x1'"),
                         ({"lr_1x1": "paper"}, "lr_1x1 must be None or 'linear_1x1' or 'linear_1x1_matrix'"),
                         ({"lr_1x1": "linear_1x1", "lr_1x1_bias": "paper"}, "lr_1x1_bias must be None or")):
        with pytest.raises(ValueError, match=message):
            experiments.run_one("cpu", {"num_1x1": 1}, recipe | bad, 0, "cpu", (None, None))
    # the pair's whole starting step (its operators, fixed) in every block, in the first two, in the last; the
    # first four variants are linear_1x1_paced's, at the pace of a scalar
    scales.clear()
    operators.clear()
    matrix = experiments.EXPERIMENTS["linear_1x1_matrix"][1]
    assert matrix[:4] == paced[:4]
    for _, options, overrides in matrix[4:]:
        with pytest.raises(Started):
            experiments.run_one("cpu", options, recipe | overrides, 3, "cpu", (None, None))
    assert scales == [1.0] * 3
    whole = product_step_operators(pair)
    for given, blocks in zip(operators, ((1, 2, 3), (1, 2), (3,))):
        assert [block + 1 for block, pair_step in enumerate(given) if pair_step is not None] == list(blocks)
        assert all(torch.equal(a, b) for block in blocks for a, b in zip(given[block - 1], whole[block - 1]))


def test_a_stall_variant_draws_its_start_from_another_seed_and_keeps_its_own_dropout(monkeypatch):
    """"init_seed=6" from seed 7 starts from seed 6's weights, "first_conv_seed=6" from seed 7's but for the first
    convolution, which is seed 6's, and "second_block_seed=6" and "last_block_seed=6" from seed 7's but for that
    block; train_ch6 keeps them (init=None) and gets seed 7 for its dropout."""
    from d2l_local import train

    class Started(Exception):
        pass

    started = []

    def stop_after_init(net, *args):  # the first thing train_ch6 does after initialising the network
        started.append(net)
        raise Started

    monkeypatch.setattr(train, "_check_input_size", stop_after_init)
    seeds, train_ch6 = [], train.train_ch6

    def recording_train_ch6(*args, seed, **kwargs):
        seeds.append(seed)
        return train_ch6(*args, seed=seed, **kwargs)

    monkeypatch.setattr(experiments, "train_ch6", recording_train_ch6)
    recipe = {k: experiments.PRESETS["cpu"].get(k, 0.0) for k in experiments.RECIPE_KEYS}
    for seed, changes in ((6, {}), (7, {}), (7, {"init_seed": 6}), (7, {"first_conv_seed": 6}),
                          (7, {"last_block_seed": 6}), (7, {"second_block_seed": 6})):
        with pytest.raises(Started):
            experiments.run_one("cpu", {"num_1x1": 1}, recipe | changes, seed, "cpu", (None, None))
    six, seven, seven_from_six, seven_first_conv_from_six, seven_last_block_from_six, seven_second_block_from_six = (
        list(net.parameters()) for net in started)
    assert seeds == [6, 7, 7, 7, 7, 7]
    first = len(list(nin_blocks(started[0])[0].parameters()))  # the second block's parameters come after the first's
    second = slice(first, first + len(list(nin_blocks(started[0])[1].parameters())))
    assert all(torch.equal(a, b) for a, b in zip(seven_second_block_from_six[second], six[second], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(seven_second_block_from_six[:first] + seven_second_block_from_six[
        second.stop:], seven[:first] + seven[second.stop:], strict=True))
    assert not torch.equal(six[first], seven[first])
    last = len(list(last_block(started[0]).parameters()))  # the last block's parameters come last
    assert last == 4  # its spatial convolution and one 1x1 layer, weights and biases
    assert all(torch.equal(a, b) for a, b in zip(seven_last_block_from_six[-last:], six[-last:], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(seven_last_block_from_six[:-last], seven[:-last], strict=True))
    assert not torch.equal(six[-last], seven[-last])
    assert all(torch.equal(a, b) for a, b in zip(seven_from_six, six, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(seven_first_conv_from_six[:2], six[:2], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(seven_first_conv_from_six[2:], seven[2:], strict=True))
    assert not torch.equal(six[0], seven[0]) and six[2].shape == seven[2].shape and not torch.equal(six[2], seven[2])
    for other in ({"start": "linear_1x1"}, {"lr_1x1": "linear_1x1"}):
        with pytest.raises(ValueError, match="cannot be combined with start or lr_1x1"):
            experiments.run_one("cpu", {"num_1x1": 1}, recipe | other | {"init_seed": 6}, 7, "cpu", (None, None))
    for init in ("default", "xavier"):
        with pytest.raises(ValueError, match=f"need an init that draws every weight and bias, not '{init}'"):
            experiments.run_one("cpu", {"num_1x1": 1}, recipe | {"init": init, "first_conv_seed": 6}, 7, "cpu",
                                (None, None))


def test_a_start_from_another_seed_leaves_the_dropout_stream_as_it_was(monkeypatch):
    """The first epoch begins with the same random state whether the run drew its own start or took another
    seed's: the run's seed alone drives its dropout."""
    from d2l_local import train

    class Started(Exception):
        pass

    states = []

    class FirstEpoch:  # a training loader that records the random state when the first epoch begins
        batch_size = 128

        def __len__(self):
            return 1

        def set_epoch(self, epoch):
            states.append(torch.get_rng_state())
            raise Started

    monkeypatch.setattr(train, "_check_input_size", lambda *args: None)
    recipe = {k: experiments.PRESETS["cpu"].get(k, 0.0) for k in experiments.RECIPE_KEYS}
    for changes in ({}, *({key: 6} for key in experiments.DRAW_KEYS)):
        with pytest.raises(Started):
            experiments.run_one("cpu", {"num_1x1": 1}, recipe | changes, 7, "cpu", (FirstEpoch(), None))
    assert all(torch.equal(state, states[0]) for state in states[1:])


def test_experiments_defined_by_their_seeds_run_where_their_seeds_are_named():
    assert experiments.BY_SEEDS <= experiments.EXPERIMENTS.keys()
    assert all(("cpu", name) in experiments.SEEDS_FOR for name in experiments.BY_SEEDS)
    assert experiments.BY_SEEDS <= set(experiments._all_names("cpu"))
    assert not experiments.BY_SEEDS & set(experiments._all_names("gpu"))
    assert experiments.BY_SEEDS <= set(experiments._all_names("gpu", seeds=[0]))
    with pytest.raises(ValueError, match=r"named for the \['cpu'\] preset only; pass --seeds to run it on the 'gpu'"):
        list(experiments.run_experiment("conv1x1_count_stall", "gpu"))
