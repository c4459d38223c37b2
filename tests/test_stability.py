"""d2l_local.stability: the closed-channel count and how ``--only`` merges a record (no data, no training)."""

import json

import pytest
import torch
from torch import nn

from d2l_local.models import INITS, NiN, PaperNiN, init_weights
from d2l_local.stability import _kept_runs
from d2l_local.train import closed_channels, closed_channels_by_layer, zero_scores_by_class


def test_a_channel_is_closed_only_when_zero_for_every_image_and_position():
    activation = torch.zeros(2, 3, 4, 4)
    activation[1, 0, 3, 3] = 0.5  # channel 0 opens for one pixel of one image
    activation[0, 1] = 1.0  # channel 1 is open everywhere in image 0
    assert closed_channels(activation) == 1  # channel 2
    assert closed_channels(activation.to(memory_format=torch.channels_last)) == 1
    activation[0, 2, 0, 0] = float("nan")  # a diverged run: broken, not closed
    assert closed_channels(activation) == 0


def test_closed_channels_by_layer_finds_a_layer_closed_by_its_bias_and_restores_training_mode():
    torch.manual_seed(0)
    net = init_weights(NiN(), "kaiming")
    last_block_first_conv = [m for m in net[-3] if isinstance(m, nn.Conv2d)][0]
    with torch.no_grad():
        last_block_first_conv.bias[:7] = -1e4  # 7 of its 10 channels can never open
    rows = closed_channels_by_layer(net.train(), torch.randn(4, 1, 224, 224), torch.device("cpu"), "fp32")
    assert net.training
    assert [(row["block"], row["layer"], row["channels"]) for row in rows] == [
        (b, i, width) for b, width in enumerate((96, 256, 384, 10), 1) for i in (1, 2, 3)]
    assert [row["closed"] for row in rows if row["block"] == 4][0] == 7
    assert all(row["closed"] < row["channels"] // 2 for row in rows if row["block"] < 4)
    assert not any(hook for relu in net.modules() if isinstance(relu, nn.ReLU) for hook in relu._forward_hooks)


def test_zero_scores_by_class_counts_the_images_that_a_closed_class_map_gives_no_score():
    torch.manual_seed(0)
    net = init_weights(PaperNiN(), "d2l_local")  # every class map starts open: all scores exactly 1
    class_maps = [m for m in net[-3] if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        class_maps.bias[2] = -1.0  # class 2's map is closed for every image
    shares = zero_scores_by_class(net.train(), torch.randn(64, 1, 28, 28), torch.device("cpu"), "fp32")
    assert net.training
    assert shares == [0.0, 0.0, 1.0] + [0.0] * 7


def test_rerunning_one_init_keeps_the_others_with_the_record_provenance(tmp_path):
    path, config = tmp_path / "stability.json", {"steps": 4, "seeds": [0]}
    record = {"preset": "cpu", "config": config, "provenance": {"commit": "abc"},
              "runs": [{"init": "d2l_local", "seed": 0}, {"init": "xavier", "seed": 0},
                       {"init": "xavier", "seed": 1, "provenance": {"commit": "def"}},
                       {"init": "retired", "seed": 0}]}
    path.write_text(json.dumps(record))
    assert _kept_runs(path, "cpu", config, "d2l_local", INITS) == [
        {"init": "xavier", "seed": 0, "provenance": {"commit": "abc"}},
        {"init": "xavier", "seed": 1, "provenance": {"commit": "def"}}]
    with pytest.raises(ValueError, match="another preset or config"):
        _kept_runs(path, "cpu", {**config, "steps": 5}, "xavier", INITS)
    with pytest.raises(ValueError, match="without --only"):
        _kept_runs(tmp_path / "missing.json", "cpu", config, "xavier", INITS)
