"""A checkpoint's parts must come from the packages that made it; resuming takes the command that started the run.

Another package is faked the way drawkit learns a plugin's package: an entry in drawkit.plugins.sources
(what load_plugins records for an installed entry point) beside the plugin registered in code. Other
records are faked by editing the checkpoint's ``plugins`` record. An installed package whose entry point
is skipped (a name clash) or fails to load is faked by running drawkit's entry-point loading again over
fake entry points, as tests/test_plugins.py does.
"""
import shutil
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn

import drawkit
from drawkit import plugins, presets
from drawkit.checkpoint import IN_CODE, check_parts, read_checkpoint
from drawkit.classifier import ClassifierConfig, build_classifier
from drawkit.cli import app
from drawkit.data import SPLITS
from drawkit.errors import DrawkitError
from drawkit.model import DrawConfig, build_model, check_read_shape
from drawkit.plugins import PluginSource
from drawkit.registry import get_registry
from drawkit_plugins.filterbank import FilterbankAttention
from conftest import FakeEntryPoint, assert_one_error_line

TINY = ["--glimpses", "2", "--hidden", "8", "--batch-size", "16", "--val-images", "16", "--device", "cpu",
        "--no-progress"]
DRAW = ["--z-dim", "2", "--read-size", "2", "--write-size", "2"]
RUN = ["--dataset", "rects", "--attention", "crop", *TINY, *DRAW]


class Crop(FilterbankAttention):
    """The filterbank, under another name and from another (faked) package."""


class Rects:
    """Random grey 8 x 8 pictures with random labels 0 or 1: a labelled data set that needs no files."""

    image_shape = (1, 8, 8)
    default_binarize = "sample"  # DRAW's Bernoulli likelihood then fits the pixels
    num_classes = 2
    sizes = {"train": 32, "valid": 16, "test": 16}

    def load(self, split, root, download):
        g = torch.Generator().manual_seed(SPLITS.index(split))
        return torch.randint(0, 256, (self.sizes[split], *self.image_shape), generator=g, dtype=torch.uint8)

    def load_labels(self, split, root, download):
        g = torch.Generator().manual_seed(10 + SPLITS.index(split))
        return torch.randint(0, 2, (self.sizes[split],), generator=g)


class CropPlugin:
    @drawkit.hookimpl
    def register_attention(self, register):
        register("crop", Crop)


class RectsPlugin:
    @drawkit.hookimpl
    def register_datasets(self, register):
        register("rects", Rects)


@contextmanager
def installed(*packages):
    """Each (plugin object, plugin name, package, version) registered as if that package were installed."""
    plugins.load_plugins()
    sources = dict(plugins.sources)
    names = []
    try:
        for obj, name, package, version in packages:
            plugins.sources[name] = PluginSource(package, version)
            plugins.pm.register(obj, name=name)
            names.append(name)
        yield
    finally:
        for name in names:
            plugins.pm.unregister(name=name)
        plugins.sources.clear()
        plugins.sources.update(sources)


def crop_a(version="0.1"):
    return CropPlugin(), "crop_a", "drawkit-a", version


def crop_b():
    return CropPlugin(), "crop_b", "drawkit-b", "0.2"


def rects(package="drawkit-rects", version="1.0"):
    return RectsPlugin(), "rects_plugin", package, version


def train(cli_runner, out, *args):
    result = cli_runner.invoke(app, ["train", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory, cli_runner):
    """A DRAW run whose attention 'crop' came from drawkit-a 0.1 and data set 'rects' from drawkit-rects 1.0."""
    out = tmp_path_factory.mktemp("crop-run")
    with installed(crop_a(), rects()):
        train(cli_runner, out, *RUN, "--max-steps", "2")
    assert read_checkpoint(out)["plugins"]["attention"] == {"name": "crop", "plugin": "crop_a",
                                                            "package": "drawkit-a", "version": "0.1"}
    return out


@pytest.fixture
def run_copy_record(crop_run, tmp_path):
    """(a copy of crop_run's folder, ``record(kind, **fields)`` that edits the copy's plugins record)."""
    out = tmp_path / "run"
    shutil.copytree(crop_run, out)

    def record(kind, **fields):
        payload = read_checkpoint(out)
        payload["plugins"][kind].update(fields)
        torch.save(payload, out / "checkpoint.pt")
    return out, record


def command(name, run, tmp_path):
    """A command that loads the run's checkpoint (and, except sample, creates its data set)."""
    return {"sample": ["sample", "--checkpoint", str(run), "--n", "2", "--out", str(tmp_path / "s.png"),
                       "--device", "cpu"],
            "evaluate": ["evaluate", "--checkpoint", str(run), "--no-progress", "--device", "cpu"],
            "reconstruct": ["reconstruct", "--checkpoint", str(run), "--n", "2", "--out", str(tmp_path / "r.png"),
                            "--device", "cpu"],
            "visualize-attention": ["visualize-attention", "--checkpoint", str(run), "--n", "2",
                                    "--out", str(tmp_path / "a.gif"), "--device", "cpu"],
            "resume": ["train", "--resume", str(run), "--max-steps", "3", "--no-progress"]}[name]


ALL = ["sample", "evaluate", "reconstruct", "visualize-attention", "resume"]
WITH_DATA = ["evaluate", "reconstruct", "visualize-attention", "resume"]


def warnings(result) -> list:
    return [line for line in result.output.splitlines() if line.startswith("Warning:")]


# A part now supplied by another package: refused, naming both

@pytest.mark.parametrize("name", ALL)
def test_a_part_now_supplied_by_another_package_is_refused_naming_both(crop_run, cli_runner, tmp_path, name):
    before = (crop_run / "checkpoint.pt").read_bytes()
    with installed(crop_b(), rects()):
        result = cli_runner.invoke(app, command(name, crop_run, tmp_path))
    assert_one_error_line(result, "this checkpoint's attention 'crop' came from package drawkit-a 0.1, but 'crop' "
                                  "is now supplied by package drawkit-b 0.2; pip install drawkit-a",
                          "uninstall drawkit-b", "plugin 'crop_b' out of DRAWKIT_LOAD_PLUGINS")
    assert (crop_run / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("name", WITH_DATA)
def test_a_data_set_now_supplied_by_another_package_is_refused_naming_both(crop_run, cli_runner, tmp_path, name):
    with installed(crop_a(), rects(package="drawkit-shapes", version="3.0")):
        result = cli_runner.invoke(app, command(name, crop_run, tmp_path))
    assert_one_error_line(result, "dataset 'rects' came from package drawkit-rects 1.0", "drawkit-shapes 3.0",
                          "pip install drawkit-rects")


def test_sample_needs_no_data_set(crop_run, cli_runner, tmp_path):
    with installed(crop_a()):
        result = cli_runner.invoke(app, command("sample", crop_run, tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").is_file()


def test_a_part_registered_in_code_is_named_as_such_never_as_a_package(run_copy_record, cli_runner, tmp_path):
    run, record = run_copy_record
    record("attention", plugin="crop_in_code", package=IN_CODE, version="")
    with installed(crop_b(), rects()):
        result = cli_runner.invoke(app, command("evaluate", run, tmp_path))
    assert_one_error_line(result, "attention 'crop' was registered in code by plugin 'crop_in_code'",
                          "now supplied by package drawkit-b 0.2", "register plugin 'crop_in_code' again")
    assert "pip install" not in result.output
    with installed(rects()):
        result = cli_runner.invoke(app, command("evaluate", run, tmp_path))
    assert_one_error_line(result, "needs attention 'crop', registered in code by plugin 'crop_in_code', which is "
                                  "not registered now; register that plugin again")
    assert "pip install" not in result.output


def test_a_package_part_now_registered_in_code_is_refused(crop_run, cli_runner, tmp_path, register_plugin):
    register_plugin(CropPlugin(), "crop_here")
    with installed(rects()):
        result = cli_runner.invoke(app, command("evaluate", crop_run, tmp_path))
    assert_one_error_line(result, "came from package drawkit-a 0.1, but 'crop' is now registered in code by plugin "
                                  "'crop_here'; pip install drawkit-a and unregister plugin 'crop_here'")


# Another version of the same package: one warning, and loading goes on

@pytest.mark.parametrize("name", ALL)
def test_another_version_of_the_package_warns_once_and_loads(crop_run, cli_runner, tmp_path, name, run_copy_record):
    run = run_copy_record[0] if name == "resume" else crop_run
    with installed(crop_a(version="0.3"), rects()):
        result = cli_runner.invoke(app, command(name, run, tmp_path))
    assert result.exit_code == 0, result.output
    assert warnings(result) == ["Warning: this checkpoint's attention 'crop' came from drawkit-a 0.1; drawkit-a 0.3 "
                                "is installed now; loading anyway (if it fails or behaves differently: "
                                "pip install 'drawkit-a==0.1')"]
    if name == "resume":
        assert "trained 3 steps" in result.output
        assert read_checkpoint(run)["plugins"]["attention"]["version"] == "0.3"  # what trains on from now


def test_a_data_set_of_another_version_warns_once_where_the_data_set_is_created(crop_run, cli_runner, tmp_path):
    with installed(crop_a(), rects(version="1.1")):
        shown = cli_runner.invoke(app, command("visualize-attention", crop_run, tmp_path))
        drawn = cli_runner.invoke(app, command("sample", crop_run, tmp_path))
    assert shown.exit_code == 0 and drawn.exit_code == 0, shown.output + drawn.output
    assert len(warnings(shown)) == 1 and "dataset 'rects' came from drawkit-rects 1.0" in warnings(shown)[0]
    assert warnings(drawn) == []  # sample does not use the data set


def test_one_warning_per_package_and_per_command(crop_run, capsys):
    payload = read_checkpoint(crop_run)
    payload["plugins"]["encoder"]["version"] = "0.0.1"
    payload["plugins"]["dataset"].update(package="drawkit", version="0.0.1")
    with installed(crop_a(version="0.2"), rects_from_drawkit()):
        registry = get_registry()
        for _ in range(2):  # a command that checks twice (visualize-attention on a classifier) warns once
            check_parts(payload, registry, {"encoder": "lstm", "attention": "crop", "dataset": "rects"})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Warning:")]
    assert len(lines) == 2, lines
    assert "encoder 'lstm' and dataset 'rects' came from drawkit 0.0.1" in lines[0]
    assert "attention 'crop' came from drawkit-a 0.1; drawkit-a 0.2 is installed now" in lines[1]


def rects_from_drawkit():
    return RectsPlugin(), "rects_plugin", "drawkit", drawkit.__version__


# Missing plugins: the checkpoint decides, so the line names the package to install

@pytest.mark.parametrize("name", WITH_DATA)
def test_a_missing_data_set_plugin_names_its_package(crop_run, cli_runner, tmp_path, name):
    with installed(crop_a()):
        result = cli_runner.invoke(app, command(name, crop_run, tmp_path))
    assert_one_error_line(result, "this checkpoint needs dataset 'rects' from package 'drawkit-rects', which is not "
                                  "installed; pip install drawkit-rects")


@pytest.mark.parametrize("name", ALL)
def test_a_missing_attention_plugin_names_its_package(crop_run, cli_runner, tmp_path, name):
    with installed(rects()):
        result = cli_runner.invoke(app, command(name, crop_run, tmp_path))
    assert_one_error_line(result, "this checkpoint needs attention 'crop' from package 'drawkit-a', which is not "
                                  "installed; pip install drawkit-a")


# Installed, but its plugin was skipped or failed to load: the line says so, never "pip install" it



class OtherPlugin:
    @drawkit.hookimpl
    def register_attention(self, register):
        register("other", Crop)




def assert_error_after_warnings(result, warned, *fragments):
    """Exit code 2, the start-up warning about the plugin (holding ``warned``), then one 'Error:' line."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("Warning:") and warned in lines[0], result.output
    assert lines[1].startswith("Error:") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[1], (fragment, lines[1])
    assert "pip install" not in lines[1]  # the package is installed


@pytest.mark.parametrize("name", ALL)
def test_a_package_whose_plugin_was_skipped_for_a_name_clash_is_named_as_installed(crop_run, cli_runner, tmp_path,
                                                                                   load_again, name):
    load_again(FakeEntryPoint("crop_a", "drawkit-b", "0.2", plugin=OtherPlugin()),
                 FakeEntryPoint("crop_a", "drawkit-a", "0.1", plugin=CropPlugin()))
    with installed(rects()):
        result = cli_runner.invoke(app, command(name, crop_run, tmp_path))
    assert_error_after_warnings(
        result, "plugin 'crop_a' (package drawkit-a) skipped",
        "Error: this checkpoint needs attention 'crop' from package 'drawkit-a'; package drawkit-a is installed but "
        "its plugin 'crop_a' was skipped: the entry-point name 'crop_a' is already used by package drawkit-b "
        "(entry-point names must be unique; see docs/plugins.md); pip uninstall drawkit-b, or rename one of the two "
        "entry points")


def test_a_plugin_skipped_because_drawkit_has_its_name_is_named_with_the_fix(crop_run, cli_runner, tmp_path,
                                                                             load_again):
    load_again(FakeEntryPoint("lstm", "drawkit-a", "0.1", plugin=CropPlugin()))
    result = cli_runner.invoke(app, command("sample", crop_run, tmp_path))
    assert_error_after_warnings(
        result, "plugin 'lstm' (package drawkit-a) skipped",
        "package drawkit-a is installed but its plugin 'lstm' was skipped: the entry-point name 'lstm' is already "
        "used by package drawkit (entry-point names must be unique; see docs/plugins.md); drawkit-a must rename its "
        "entry point 'lstm'")


@pytest.mark.parametrize("name", WITH_DATA)
def test_a_package_whose_plugin_failed_to_load_is_named_as_installed(crop_run, cli_runner, tmp_path, load_again,
                                                                     name):
    load_again(FakeEntryPoint("rects_plugin", "drawkit-rects", "1.0",
                                error=ImportError("No module named 'shapely'\nsecond line")))
    with installed(crop_a()):
        result = cli_runner.invoke(app, command(name, crop_run, tmp_path))
    assert_error_after_warnings(
        result, "plugin 'rects_plugin' (package drawkit-rects) failed to load",
        "Error: this checkpoint needs dataset 'rects' from package 'drawkit-rects'; package drawkit-rects is "
        "installed but its plugin 'rects_plugin' failed to load (ImportError: No module named 'shapely'); fix what "
        "that names, or reinstall drawkit-rects")


# An attention whose glimpse_shape is not what its read returns

class Liar(FilterbankAttention):
    """Declares one row and column more than its read returns."""

    def __init__(self, image_shape, hidden_size, read_size=2, write_size=5):
        super().__init__(image_shape, hidden_size, read_size, write_size)
        self.glimpse_shape = (2 * self.channels, read_size + 1, read_size + 1)
        self.image_glimpse_shape = (self.channels, read_size, read_size + 2)


class LiarPlugin:
    @drawkit.hookimpl
    def register_attention(self, register):
        register("liar", Liar)


def test_a_glimpse_shape_that_is_not_what_read_returns_is_refused_in_one_line(register_plugin, cli_runner, tmp_path):
    register_plugin(LiarPlugin(), "liar_plugin")
    with installed(rects()):
        result = cli_runner.invoke(app, ["train", "--dataset", "rects", "--attention", "liar", *TINY, *DRAW,
                                         "--max-steps", "1", "--out", str(tmp_path / "run")])
    assert_one_error_line(result, "attention 'liar' (plugin 'liar_plugin', registered in code) declares "
                                  "glimpse_shape (2, 3, 3), but its read() returns patches of shape (2, 2, 2)")
    assert not (tmp_path / "run").exists()


def test_a_classifier_checks_the_shape_of_the_read_it_uses(register_plugin):
    register_plugin(LiarPlugin(), "liar_plugin")
    config = ClassifierConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, read_size=3, num_classes=2,
                              attention="liar")
    with pytest.raises(DrawkitError, match=r"declares image_glimpse_shape \(1, 3, 5\), but its read_image\(\) "
                                           r"returns patches of shape \(1, 3, 3\)"):
        build_classifier(config, get_registry())


class NoisyRead(nn.Module):
    """A read that draws random numbers and moves batch-norm statistics: the probe must leave both alone."""

    glimpse_shape = (2, 4, 4)

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(2)

    def read(self, x, x_hat, h):
        patch = torch.nn.functional.adaptive_avg_pool2d(torch.cat([x, x_hat], 1), 4)
        return self.norm(patch + torch.rand_like(patch))


def test_the_read_probe_changes_nothing():
    attention = NoisyRead()
    reg = type("Reg", (), {"name": "noisy", "plugin": "noisy", "package": IN_CODE})()
    state, stats = torch.get_rng_state(), attention.norm.running_mean.clone()
    assert check_read_shape(attention, reg, (1, 8, 8), 8) == (2, 4, 4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(attention.norm.running_mean, stats) and attention.norm.num_batches_tracked == 0
    assert attention.training and attention.norm.training


def test_a_model_of_well_behaved_plugins_builds_as_before():
    model = build_model(DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2), get_registry())
    assert model(torch.rand(2, 1, 8, 8).round()).loss.shape == (2,)


# Resuming with the command that started the run

def tiny_preset(monkeypatch, picture_folder, name="tiny", glimpses=2):
    monkeypatch.setitem(presets.PRESETS, name, ("a tiny model", {
        "dataset": "image-folder", "dataset_opt": [f"path={picture_folder}", "image_size=8", "grayscale=true"],
        "glimpses": glimpses, "hidden": 8, "z_dim": 2, "read_size": 2, "write_size": 2, "batch_size": 16,
        "lr": 2e-3}))


@pytest.fixture
def picture_run(picture_folder, tmp_path, cli_runner):
    """A run started with options of every sort: converted, a preset's, repeated, typed as their defaults."""
    started = ["--dataset", "image-folder", "--dataset-opt", f"path={picture_folder}", "--image-size", "8",
               "--grayscale", "--encoder", "cnn", "--encoder-opt", "channels=4", "--glimpses", "2", "--hidden", "8",
               "--z-dim", "2", "--read-size", "2", "--write-size", "2", "--batch-size", "16", "--lr", "0.002",
               "--seed", "0", "--val-images", "8", "--likelihood", "bernoulli", "--device", "cpu", "--no-progress",
               "--out", str(tmp_path / "run")]
    train(cli_runner, tmp_path / "run", *started, "--max-steps", "2")
    return tmp_path / "run", started


def test_resuming_with_the_command_that_started_the_run_trains_on(picture_run, cli_runner):
    run, started = picture_run
    result = cli_runner.invoke(app, ["train", *started, "--max-steps", "4", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "trained 4 steps" in result.output
    assert read_checkpoint(run)["step"] == 4


@pytest.mark.parametrize("option, value, run_value", [
    ("--glimpses", "3", "2"),
    ("--lr", "0.01", "0.002"),
    ("--dataset-opt", "image_size=16", "8"),
    ("--image-size", "16", "8"),
    ("--encoder-opt", "channels=8", "4"),
    ("--encoder", "lstm", "cnn"),
    ("--val-images", "4", "8"),
    ("--task", "classify", "generate"),
])
def test_resuming_with_a_changed_value_names_the_option_and_both_values(picture_run, cli_runner, option, value,
                                                                         run_value):
    run, started = picture_run
    before = (run / "checkpoint.pt").read_bytes()
    result = cli_runner.invoke(app, ["train", *started, option, value, "--resume", str(run)])
    label = f"{option} {value.split('=')[0]}" if "=" in value else option
    new = value.split("=")[-1]
    assert_one_error_line(result, f"{label} cannot change when resuming: it is {run_value} in this run, not {new}",
                          "only --epochs, --max-steps")
    assert (run / "checkpoint.pt").read_bytes() == before


def test_resuming_into_another_folder_is_refused(picture_run, cli_runner, tmp_path):
    run, started = picture_run
    result = cli_runner.invoke(app, ["train", *started, "--out", str(tmp_path / "elsewhere"), "--resume", str(run)])
    assert_one_error_line(result, f"--out cannot change when resuming: it is {run} in this run, not "
                                  f"{tmp_path / 'elsewhere'}")


def test_changeable_options_still_change(picture_run, cli_runner):
    run, _ = picture_run
    result = cli_runner.invoke(app, ["train", "--resume", str(run), "--max-steps", "3", "--log-every", "1",
                                     "--keep", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert read_checkpoint(run)["train_config"]["log_every"] == 1
    assert read_checkpoint(run)["train_config"]["keep"] == 1


def test_a_preset_given_again_counts_as_its_values_typed(monkeypatch, picture_folder, cli_runner, tmp_path):
    tiny_preset(monkeypatch, picture_folder)
    tiny_preset(monkeypatch, picture_folder, "tiny-3", glimpses=3)
    started = ["--preset", "tiny", "--val-images", "8", "--device", "cpu", "--no-progress"]
    run = tmp_path / "run"
    train(cli_runner, run, *started, "--max-steps", "2")
    result = cli_runner.invoke(app, ["train", *started, "--max-steps", "3", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert read_checkpoint(run)["step"] == 3
    other = ["--preset", "tiny-3", *started[2:]]
    assert_one_error_line(cli_runner.invoke(app, ["train", *other, "--resume", str(run)]),
                          "--glimpses cannot change when resuming: it is 2 in this run, not 3 (from --preset tiny-3)")
    result = cli_runner.invoke(app, ["train", *other, "--glimpses", "2", "--max-steps", "4", "--resume", str(run)])
    assert result.exit_code == 0, result.output  # the same values, whichever preset holds them


def test_a_classifier_resumes_with_its_command_and_refuses_generation_options(cli_runner, tmp_path):
    started = ["--task", "classify", "--dataset", "rects", "--attention", "crop", *TINY, "--read-size", "3",
               "--z-dim", "100"]  # the --z-dim default: accepted by classify, so a command may hold it
    run = tmp_path / "run"
    with installed(crop_a(), rects()):
        train(cli_runner, run, *started, "--max-steps", "2")
        result = cli_runner.invoke(app, ["train", *started, "--max-steps", "3", "--resume", str(run)])
        assert result.exit_code == 0, result.output
        assert read_checkpoint(run)["step"] == 3
        assert_one_error_line(cli_runner.invoke(app, ["train", *started, "--z-dim", "3", "--resume", str(run)]),
                              "--z-dim cannot change when resuming: this run (--task classify) has no --z-dim")
        assert_one_error_line(cli_runner.invoke(app, ["train", *started, "--read-size", "4", "--resume", str(run)]),
                              "--read-size cannot change when resuming: it is 3 in this run, not 4")
