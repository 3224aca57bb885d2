"""The DCRW encoder: a CNN over each glimpse, assembled into DRAW through build_model like any encoder."""
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn as nn

from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.model import DrawConfig, build_model
from drawkit_plugins.cnn_encoder import CNNEncoder

TINY = dict(glimpses=3, hidden=16, z_dim=4, write_size=3)


def cnn_model(registry, image_shape, attention="filterbank", **config):
    return build_model(DrawConfig(image_shape=image_shape, encoder="cnn", attention=attention, **{**TINY, **config}),
                       registry)


def convs(model) -> list:
    return [m for m in model.encoder.features if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("image_shape", [(1, 14, 14), (3, 10, 12)])
@pytest.mark.parametrize("attention", ["filterbank", "none"])
def test_shapes_through_build_model(registry, image_shape, attention):
    model = cnn_model(registry, image_shape, attention)
    channels, height, width = image_shape
    glimpse = (2 * channels, 12, 12) if attention == "filterbank" else (2 * channels, height, width)
    assert isinstance(model.encoder, CNNEncoder)
    assert model.config.read_size == 12                        # the cnn encoder's default read window
    assert tuple(model.attention.glimpse_shape) == glimpse
    assert convs(model)[0].in_channels == 2 * channels         # x and x_hat stacked as channels

    x = torch.rand(5, *image_shape).round()
    h_dec = torch.zeros(5, TINY["hidden"])
    state = model.encoder.initial_state(5, x)
    h_enc, state = model.encoder(model.attention.read(x, x, h_dec), h_dec, state)
    assert h_enc.shape == (5, model.encoder.output_size) and state is None

    out = model(x)
    assert out.loss.shape == (5,) and out.kl.shape == (5, TINY["glimpses"])
    assert out.canvas.shape == (5, *image_shape)
    assert model.generate(2).shape == (2, *image_shape)


@pytest.mark.parametrize("read_size", [1, 2, 5])
def test_tiny_and_odd_glimpses_keep_working(registry, read_size):
    model = cnn_model(registry, (1, 14, 14), read_size=read_size, encoder_options={"kernel_size": 5, "depth": 3})
    c, h, w = model.encoder.feature_shape
    assert c == 32 and 1 <= h <= read_size and 1 <= w <= read_size
    assert torch.isfinite(model(torch.rand(3, 1, 14, 14).round()).loss).all()


def test_options_reach_the_network(registry):
    model = cnn_model(registry, (1, 14, 14), encoder_options={"channels": [4, 6, 8], "kernel_size": [3, 5, 1],
                                                              "pool": 1})
    assert [(c.out_channels, c.kernel_size) for c in convs(model)] == [(4, (3, 3)), (6, (5, 5)), (8, (1, 1))]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.encoder.features)
    assert model.encoder.feature_shape == (8, 12, 12)

    model = cnn_model(registry, (1, 14, 14), encoder_options={"channels": 5, "depth": 1})
    assert [c.out_channels for c in convs(model)] == [5] and model.encoder.feature_shape == (5, 6, 6)


def test_unknown_option_lists_the_accepted_ones(registry):
    with pytest.raises(DrawkitError, match="no option 'width'; its options: channels, kernel_size, depth, pool"):
        cnn_model(registry, (1, 14, 14), encoder_options={"width": 3})


@pytest.mark.parametrize("options, fragment", [
    ({"channels": 0}, r"option channels must be a whole number .*, got 0$"),
    ({"channels": [4, 8], "depth": 3}, r"option channels must .* list of 3 .*, got \[4, 8\]$"),
    ({"channels": [4, 8], "kernel_size": [3, 3, 3]}, r"option kernel_size must .* list of 2 .*, got \[3, 3, 3\]$"),
    ({"kernel_size": "big"}, r"option kernel_size must be a whole number .*, got 'big'$"),
    ({"kernel_size": 2.5}, r"option kernel_size must be a whole number .*, got 2.5$"),
    ({"depth": 0}, r"option depth must be a whole number of at least 1, got 0$"),
    ({"pool": True}, r"option pool must be a whole number .*, got True$"),
])
def test_bad_option_values_are_user_errors(registry, options, fragment):
    with pytest.raises(DrawkitError, match=fragment):
        cnn_model(registry, (1, 14, 14), encoder_options=options)


def test_a_few_steps_lower_the_loss(registry):
    torch.manual_seed(0)
    x = torch.zeros(32, 1, 14, 14)                              # bars at random rows and columns
    rows, cols = torch.randint(2, 12, (2, 32))
    x[torch.arange(32), 0, rows, 2:12] = 1
    x[torch.arange(32), 0, 2:12, cols] = 1
    model = cnn_model(registry, (1, 14, 14), encoder_options={"channels": 8})
    noise = torch.randn(TINY["glimpses"], 32, TINY["z_dim"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model(x, noise=noise).loss.mean().item()
    for _ in range(25):
        loss = model(x).loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model(x, noise=noise).loss.mean().item()
    assert after < 0.8 * before, (before, after)


def test_train_and_sample_through_the_cli(cli_runner, tiny_train_args, tmp_path):
    args = list(tiny_train_args)
    at = args.index("--read-size")
    del args[at:at + 2]                                         # leave the read window to the plugin's default
    run = tmp_path / "run"
    result = cli_runner.invoke(app, ["train", "--encoder", "cnn", "--encoder-opt", "channels=4", *args,
                                     "--out", str(run)])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(run / "checkpoint.pt")
    assert payload["model_config"]["read_size"] == 12 and payload["model_config"]["encoder_options"] == {"channels": 4}
    record = payload["plugins"]["encoder"]
    assert (record["name"], record["plugin"], record["package"]) == ("cnn", "cnn", "drawkit")
    config = payload["model_config"]
    assert (config["encoder"], config["glimpses"], config["hidden"], config["z_dim"]) == ("cnn", 3, 16, 4)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", s) for s in range(1, 6)] + [("valid", 5)]
    assert records[-1]["n_images"] == 64 and all(np.isfinite(r.get("loss", r.get("nll_bound"))) for r in records)
    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(run), "--n", "4", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert_sample_grid(iio.imread(tmp_path / "s.png"), n_side=2, scale=2)


def assert_sample_grid(png: np.ndarray, n_side: int, scale: int, side: int = 28, padding: int = 2) -> None:
    """n_side x n_side grey images of side pixels, padding round each, all upscaled: sizes and non-blank images."""
    cell = side + padding
    assert png.shape == (scale * (padding + n_side * cell), scale * (padding + n_side * cell), 3)
    for r in range(n_side):
        for c in range(n_side):
            top, left = scale * (padding + r * cell), scale * (padding + c * cell)
            image = png[top:top + scale * side, left:left + scale * side]
            assert (png[top - scale * padding:top, left:left + scale * side] == 128).all()  # grey padding
            assert image.std() > 0, (r, c)                  # not one flat value


def test_cli_refuses_a_bad_option_in_one_line(cli_runner, tiny_train_args, tmp_path):
    result = cli_runner.invoke(app, ["train", "--encoder", "cnn", "--encoder-opt", "kernel_size=0", *tiny_train_args,
                                     "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "encoder 'cnn' option kernel_size must be a whole number of at least 1" in lines[0], lines[0]
    assert lines[0].endswith("got 0"), lines[0]
    assert not (tmp_path / "run").exists()  # refused before any run folder is made
