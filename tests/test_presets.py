"""Presets: named `drawkit train` settings kept as data; flags given on the command line win."""
import copy

import pytest
import typer

from drawkit import cli
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app
from drawkit.presets import PRESETS, preset_options
from conftest import assert_one_error_line

PAPER_MNIST = {"glimpses": 64, "hidden": 256, "z_dim": 100, "read_size": 2, "write_size": 5,
               "attention": "filterbank", "encoder": "lstm", "likelihood": "bernoulli"}
TINY = ("--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--max-steps", "1", "--val-images", "16",
        "--batch-size", "8", "--no-progress")


@pytest.fixture
def configs_built(monkeypatch):
    """`drawkit train` stops where training would start; the list gets the (model config, train config) it built."""
    built = []
    monkeypatch.setattr(cli, "_run_training", lambda model_config, config, *rest, **kw: built.append((model_config,
                                                                                                      config)))
    return built


def train_configs(cli_runner, configs_built, *options):
    result = cli_runner.invoke(app, ["train", *options])
    assert result.exit_code == 0, result.output
    assert len(configs_built) == 1
    return configs_built[0]


def setting(model_config, config, name):
    """A `drawkit train` option's value as it reached the model or training config."""
    return getattr(model_config, name) if hasattr(model_config, name) else getattr(config, name)


def train_option_names() -> set:
    command = typer.main.get_command(app).commands["train"]
    return {param.name for param in command.params}


def test_paper_mnist_sets_the_papers_mnist_hyperparameters(cli_runner, configs_built):
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "paper-mnist")
    assert {name: getattr(model_config, name) for name in PAPER_MNIST} == PAPER_MNIST
    assert (config.dataset, config.preset) == ("binarized-mnist", "paper-mnist")


def test_paper_mnist_noattention_is_the_same_model_without_windows(cli_runner, configs_built):
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "paper-mnist-noattention")
    assert (model_config.glimpses, model_config.hidden, model_config.z_dim) == (64, 256, 100)
    assert model_config.attention == "none" and model_config.encoder == "lstm"
    assert (model_config.read_size, model_config.write_size) == (None, None)
    assert (config.dataset, config.preset, model_config.likelihood) == ("binarized-mnist", "paper-mnist-noattention",
                                                                        "bernoulli")


def test_explicit_flags_override_the_preset(cli_runner, configs_built):
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "paper-mnist", "--glimpses", "2",
                                         "--z-dim", "3", "--likelihood", "logistic", "--lr", "0.01")
    assert (model_config.glimpses, model_config.z_dim, model_config.likelihood, config.lr) == (2, 3, "logistic", 0.01)
    assert (model_config.hidden, model_config.read_size, model_config.write_size) == (256, 2, 5)
    assert config.dataset == "binarized-mnist"


def test_a_flag_given_at_its_default_value_still_overrides_the_preset(cli_runner, configs_built):
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "paper-mnist-noattention",
                                         "--attention", "filterbank", "--dataset", "mnist", "--hidden", "256")
    assert (model_config.attention, config.dataset) == ("filterbank", "mnist")
    assert model_config.glimpses == 64


def test_no_preset_leaves_the_plain_defaults(cli_runner, configs_built):
    model_config, config = train_configs(cli_runner, configs_built)
    assert (config.dataset, config.preset, model_config.likelihood, model_config.read_size) == ("mnist", None, None,
                                                                                               None)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_key_is_a_train_option(name):
    assert set(preset_options(name)) <= train_option_names()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_value_reaches_the_configs(name, cli_runner, configs_built):
    model_config, config = train_configs(cli_runner, configs_built, "--preset", name)
    assert {k: setting(model_config, config, k) for k in preset_options(name)} == preset_options(name)


def test_preset_options_are_a_copy_of_the_table():
    table = copy.deepcopy(PRESETS)
    preset_options("paper-mnist")["glimpses"] = 1
    assert PRESETS == table


def test_unknown_preset_is_one_line_listing_the_choices(cli_runner, configs_built, tmp_path):
    result = cli_runner.invoke(app, ["train", "--preset", "paper-cifar", "--out", str(tmp_path / "run")])
    assert_one_error_line(result, "unknown preset 'paper-cifar'", ", ".join(PRESETS))
    assert configs_built == [] and not (tmp_path / "run").exists()


def test_presets_command_lists_every_preset(cli_runner):
    result = cli_runner.invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    for name, (what, options) in PRESETS.items():
        assert name in result.stdout
        assert what.split()[0] in result.stdout
    assert "--read-size 2" in result.stdout and "--write-size 5" in result.stdout


def test_preset_with_small_overrides_trains_on_binarized_mnist(mnist_available, cli_runner, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = cli_runner.invoke(app, ["train", "--preset", "paper-mnist", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(out)
    model, train = payload["model_config"], payload["train_config"]
    assert (model["glimpses"], model["hidden"], model["z_dim"]) == (2, 8, 2)
    assert (model["read_size"], model["write_size"], model["attention"]) == (2, 5, "filterbank")
    assert (train["dataset"], train["preset"], train["binarize"], train["batch_size"]) == ("binarized-mnist",
                                                                                         "paper-mnist", "none", 8)
    assert payload["step"] == 1
    assert payload["dataset_source"] in ("larochelle-murray", "derived-from-mnist (seed 1234)")
    if payload["dataset_source"].startswith("derived"):
        assert list((tmp_path / "cache").rglob("*.pt"))
