"""Presets: named `drawkit train` settings kept as data; flags given on the command line win."""
import copy
import dataclasses

import pytest
import typer

import drawkit.presets
from drawkit import cli
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import PRESETTABLE, RUN_OPTIONS, TRAIN_OPTIONS, app
from drawkit.errors import DrawkitError
from drawkit.model import DrawConfig
from drawkit.presets import PRESETS, preset_options, preset_setting
from drawkit.schedule import check_restarts, learning_rate
from drawkit.training import TrainConfig
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
    """A `drawkit train` option's value as it reached the model or training config (through TRAIN_OPTIONS)."""
    where = TRAIN_OPTIONS[name]
    return getattr(model_config if where.config == "model" else config, where.field)


def expected(name, value):
    """What a `drawkit train` option set to ``value`` (the others unset) puts in its config field."""
    convert = TRAIN_OPTIONS[name].convert
    return convert({**dict.fromkeys(TRAIN_OPTIONS), name: value}) if convert else value


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
def test_every_preset_key_reaches_a_config(name):
    assert set(preset_options(name)) <= set(PRESETTABLE)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_value_reaches_the_configs(name, cli_runner, configs_built):
    model_config, config = train_configs(cli_runner, configs_built, "--preset", name)
    options = preset_options(name)
    assert {k: setting(model_config, config, k) for k in options} == {k: expected(k, v) for k, v in options.items()}
    assert config.preset == name


def test_every_train_option_reaches_a_config_or_says_how_the_command_runs():
    assert set(TRAIN_OPTIONS).isdisjoint(RUN_OPTIONS)
    assert set(TRAIN_OPTIONS) | set(RUN_OPTIONS) == train_option_names()


def test_the_option_table_fills_every_config_field_the_command_line_sets():
    fields = {(where.config, where.field) for where in TRAIN_OPTIONS.values()}
    assert fields == ({("model", f.name) for f in dataclasses.fields(DrawConfig)} - {("model", "image_shape")}) | (
        {("train", f.name) for f in dataclasses.fields(TrainConfig)} - {("train", "max_bad_steps")})


#: every option a preset may set, at a value that is no default, and where it must land
EVERYTHING = {
    "task": "classify", "dataset": "image-folder", "dataset_opt": ["path=pics"], "image_size": 12, "grayscale": True,
    "encoder": "cnn", "attention": "none", "glimpses": 3, "hidden": 16, "z_dim": 4, "read_size": 3,
    "write_size": 4, "encoder_opt": ["channels=4"], "attention_opt": ["sharpness=2"], "likelihood": "logistic",
    "binarize": "threshold", "batch_size": 7, "epochs": 3, "max_steps": 5, "lr": 0.02, "lr_decay": 0.9, "lr_schedule": "cosine", "lr_restarts": "2", "clip": 2.5, "adam_beta1": 0.5, "seed": 7,
    "device": "cpu", "data_dir": "data", "out": "runs/test", "log_every": 9, "val_images": 11, "keep": 2,
    "compile": True, "compile_mode": "reduce-overhead", "tensorboard": True, "time_limit": "2h",
    "canvas_start": "learned", "kl_warmup": 50, "precision": "bf16", "tf32": False,
}
LANDS = {"dataset_options": {"path": "pics", "image_size": 12, "grayscale": True},
         "encoder_options": {"channels": 4}, "attention_options": {"sharpness": 2}}


@pytest.fixture
def test_preset(monkeypatch):
    """Adds preset 'test' to PRESETS, setting the options it is given."""
    def add(options):
        monkeypatch.setattr(drawkit.presets, "PRESETS", {**PRESETS, "test": ("a preset for the tests", options)})
    return add


def test_the_test_preset_sets_every_option_a_preset_may_set():
    assert set(EVERYTHING) == set(PRESETTABLE)


def test_every_option_a_preset_sets_reaches_the_configs(cli_runner, configs_built, test_preset):
    test_preset(EVERYTHING)
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "test")
    for name, value in EVERYTHING.items():
        field = TRAIN_OPTIONS[name].field
        assert setting(model_config, config, name) == LANDS.get(field, value), name
    assert config.preset == "test"


def test_a_preset_sets_the_training_options_too(cli_runner, configs_built, test_preset):
    test_preset({"epochs": 3, "clip": 2.5, "seed": 7, "max_steps": 5, "compile": True})
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "test")
    assert (config.epochs, config.clip, config.seed, config.max_steps, config.compile) == (3, 2.5, 7, 5, True)


def test_explicit_flags_override_the_presets_training_options(cli_runner, configs_built, test_preset):
    test_preset({"epochs": 3, "clip": 2.5, "seed": 7, "max_steps": 5, "compile": True, "image_size": 12})
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "test", "--epochs", "10",
                                         "--seed", "0", "--no-compile", "--image-size", "20")
    assert (config.epochs, config.seed, config.compile, config.dataset_options) == (10, 0, False, {"image_size": 20})
    assert (config.clip, config.max_steps) == (2.5, 5)


@pytest.mark.parametrize("key", ["epochz", "progress", "resume", "distributed", "preset"])
def test_a_preset_key_that_reaches_no_config_is_refused(cli_runner, configs_built, test_preset, key):
    test_preset({"glimpses": 2, key: 3})
    result = cli_runner.invoke(app, ["train", "--preset", "test"])
    assert result.exit_code == 1 and f"preset 'test' sets {key}, which reach no config" in result.output
    assert configs_built == []
    with pytest.raises(ValueError, match=key):
        cli.preset_values("test")


def test_train_without_options_builds_the_configs_defaults(cli_runner, configs_built):
    assert train_configs(cli_runner, configs_built) == (DrawConfig(), TrainConfig())


def test_compile_can_be_turned_off_by_name(cli_runner, configs_built):
    assert train_configs(cli_runner, configs_built, "--no-compile")[1].compile is False
    configs_built.clear()
    assert train_configs(cli_runner, configs_built, "--compile")[1].compile is True


def test_a_failed_compile_names_the_flag_that_turns_it_off(cli_runner, monkeypatch):
    class CompileFailed(Exception):
        __module__ = "torch._dynamo.exc"

    def fail(*args, **kwargs):
        raise CompileFailed("no C++ compiler found")

    monkeypatch.setattr(cli, "_run_training", fail)
    assert_one_error_line(cli_runner.invoke(app, ["train", "--compile"]), "torch.compile failed", "--no-compile")


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


def test_preset_with_small_overrides_trains_on_binarized_mnist(cli_runner, tmp_path, monkeypatch):
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


def test_a_preset_setting_is_none_when_the_preset_sets_nothing_or_is_gone():
    """A run saved under a preset since renamed must still resume: its checks ask, and get None."""
    from drawkit.presets import preset_setting

    assert preset_setting("paper-cluttered", "lr_schedule") == "cosine"
    assert preset_setting("paper-mnist", "lr_schedule") is None
    assert preset_setting("a-preset-since-renamed", "lr_schedule") is None
    assert preset_setting(None, "lr_schedule") is None


def test_a_shorter_run_of_a_preset_ends_before_its_restarts_and_trains_one_cosine(cli_runner, configs_built):
    """`--preset paper-cluttered-4 --epochs 100`: the preset's restarts (180, 340) lie past it and are not an error."""
    model_config, config = train_configs(cli_runner, configs_built, "--preset", "paper-cluttered-4", "--epochs", "100")
    assert (config.epochs, config.lr_restarts) == (100, "180,340")
    check_restarts(config.lr_restarts, config.lr_schedule, config.epochs, preset_setting("paper-cluttered-4", "lr_restarts"))
    total = 100 * 781
    assert learning_rate("cosine", 1e-3, 1, total // 2, 50, total, (180 * 781, 340 * 781)) == pytest.approx(5e-4)
    with pytest.raises(DrawkitError, match="every restart must come before the last epoch"):
        check_restarts("180,340", "cosine", 100)  # typed by the user: an error, not a silent no-op
    check_restarts("180,340", "decay", 560, "180,340")  # --preset paper-cluttered-4 --lr-schedule decay: unused
    with pytest.raises(DrawkitError, match="restarts the cosine schedule"):
        check_restarts("180,340", "decay", 560)
