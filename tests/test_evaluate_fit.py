"""`drawkit evaluate` says so, once, when the model's likelihood cannot score the pixels it is given."""
import json

import pytest
import torch

from drawkit.cli import app
from drawkit.evaluate import likelihood_misfit

WARNING = "Warning: the bernoulli likelihood scores only pixels of 0 or 1"


def train(cli_runner, tiny_train_args, out, *options):
    result = cli_runner.invoke(app, ["train", *tiny_train_args, "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return out


def evaluate(cli_runner, run, *options):
    """Several batches, so a warning given per batch would show more than once."""
    result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(run), "--max-images", "24",
                                     "--batch-size", "8", "--no-progress", *options])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def grey_bernoulli_run(tmp_path_factory, cli_runner, tiny_train_args):
    """A Bernoulli model trained on the grey (generated) MNIST as it is, without binarizing."""
    return train(cli_runner, tiny_train_args, tmp_path_factory.mktemp("grey-bernoulli"), "--binarize", "none")


def test_bernoulli_on_grey_pixels_warns_once(grey_bernoulli_run, cli_runner):
    result = evaluate(cli_runner, grey_bernoulli_run)
    assert result.stderr.count("Warning:") == 1, result.stderr
    assert WARNING in result.stderr
    assert "not a bound on a negative log-likelihood" in result.stderr and "--likelihood logistic" in result.stderr
    assert result.stdout.startswith("mnist test (24 images): bound ") and "Warning" not in result.stdout


def test_json_stays_one_object_and_carries_the_warning(grey_bernoulli_run, cli_runner):
    result = evaluate(cli_runner, grey_bernoulli_run, "--json")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    report = json.loads(lines[0])
    assert report["likelihood_fits_data"] is False
    assert report["warning"] in result.stderr.replace("\n", " ") and "pixels of 0 or 1" in report["warning"]
    assert result.stderr.count("Warning:") == 1, result.stderr


def test_binarized_model_gives_no_warning(mnist_run, cli_runner):
    result = evaluate(cli_runner, mnist_run, "--json")
    assert "Warning" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert report["likelihood_fits_data"] is True and "warning" not in report


def test_logistic_on_grey_pixels_gives_no_warning(tmp_path, cli_runner, tiny_train_args):
    run = train(cli_runner, tiny_train_args, tmp_path / "grey-logistic", "--binarize", "none",
                "--likelihood", "logistic")
    result = evaluate(cli_runner, run, "--json")
    assert "Warning" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["likelihood_fits_data"] is True


@pytest.mark.parametrize("likelihood, pixels, fits", [
    (None, [0.0, 1.0, 1.0, 0.0], True),              # no likelihood recorded: Bernoulli
    ("bernoulli", [0.0, 1.0, 0.5, 0.0], False),
    ("logistic", [0.0, 1.0, 128 / 255, 3 / 255], True),
    ("logistic", [0.0, 1.0, 0.5, 3 / 255], False),   # 0.5 is between the levels 127/255 and 128/255
    ("logistic", [0.0, 1.2, 1.0, 0.0], False),
])
def test_likelihood_misfit(likelihood, pixels, fits):
    x = torch.tensor(pixels).view(1, 1, 2, 2)
    assert (likelihood_misfit(likelihood, x) == "") is fits
