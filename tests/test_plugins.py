"""Plugins: built-ins arrive through entry points, outside ones through pm.register; clashes and failures are loud."""
import json
import math
from types import ModuleType

import imageio.v3 as iio
import pytest
import torch
import torch.nn as nn
import typer

import drawkit
from drawkit import plugins
from drawkit.checkpoint import load_model, read_checkpoint
from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.model import DrawConfig, build_model, resolve_config
from drawkit.registry import Registry, get_registry
from drawkit_plugins.filterbank import FilterbankAttention
from drawkit_plugins.lstm_encoder import LSTMEncoder
from conftest import FakeEntryPoint, NoisePictures


class GRUEncoder(nn.Module):
    def __init__(self, glimpse_shape, decoder_size: int, hidden_size: int, output_size: int = None):
        super().__init__()
        self.output_size = output_size or hidden_size
        self.cell = nn.GRUCell(math.prod(glimpse_shape) + decoder_size, self.output_size)

    def initial_state(self, batch: int, like: torch.Tensor):
        return like.new_zeros(batch, self.output_size)

    def forward(self, glimpse, h_dec, state):
        h = self.cell(torch.cat([glimpse.flatten(1), h_dec], dim=1), state)
        return h, h


class RandomImages(NoisePictures):
    image_shape = (3, 16, 16)
    sizes = {"train": 64, "valid": 16, "test": 16}


class ToyPlugin:
    @drawkit.hookimpl
    def register_encoders(self, register):
        register("toy-gru", GRUEncoder, description="GRU over [glimpse, h_dec]")

    @drawkit.hookimpl
    def register_datasets(self, register):
        register("toy-noise", RandomImages, description="random colour images")


class DuplicateLSTM:
    @drawkit.hookimpl
    def register_encoders(self, register):
        register("lstm", GRUEncoder, description="an impostor")


class ExplodingAttention:
    @drawkit.hookimpl
    def register_attention(self, register):
        raise RuntimeError("boom in the attention hook")

    @drawkit.hookimpl
    def register_encoders(self, register):
        register("toy-gru", GRUEncoder)


class NotCallable:
    @drawkit.hookimpl
    def register_datasets(self, register):
        register("broken-data", 42)


class WithDefaults:
    @drawkit.hookimpl
    def register_encoders(self, register):
        register("toy-gru-wide", GRUEncoder, defaults={"read_size": 3, "write_size": 4})

    @drawkit.hookimpl
    def register_attention(self, register):
        register("toy-filterbank", FilterbankAttention, defaults={"read_size": 6})


def plugins_table(cli_runner):
    result = cli_runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("kind, name, plugin", [
    ("encoder", "lstm", "lstm"),
    ("attention", "filterbank", "filterbank"),
    ("attention", "none", "no_attention"),
    ("dataset", "mnist", "mnist"),
])
def test_builtins_come_from_package_drawkit(kind, name, plugin):
    registration = get_registry().get(kind, name)
    assert registration.plugin == plugin
    assert registration.package == "drawkit"
    assert registration.version == drawkit.__version__
    assert plugin not in plugins.broken


def test_plugins_command_lists_builtins(cli_runner):
    output = plugins_table(cli_runner).stdout
    for name in ("lstm", "filterbank", "none", "mnist", "drawkit"):
        assert name in output


def test_unknown_name_lists_the_choices():
    with pytest.raises(DrawkitError) as error:
        get_registry().get("attention", "spotlight")
    assert "spotlight" in str(error.value) and "filterbank" in str(error.value) and "none" in str(error.value)


def test_registered_plugin_appears_in_registry_and_plugins_command(register_plugin, cli_runner):
    register_plugin(ToyPlugin(), name="toy_plugin")
    registry = get_registry()
    assert registry.get("encoder", "toy-gru").plugin == "toy_plugin"
    assert registry.get("dataset", "toy-noise").factory is RandomImages
    assert registry.get("encoder", "toy-gru").package == "(registered in code)"
    output = plugins_table(cli_runner).stdout
    assert "toy-gru" in output and "toy-noise" in output and "toy_plugin" in output


def test_plugin_encoder_and_dataset_train_and_sample(register_plugin, cli_runner, tmp_path):
    register_plugin(ToyPlugin(), name="toy_plugin")
    run = tmp_path / "run"
    result = cli_runner.invoke(app, ["train", "--encoder", "toy-gru", "--dataset", "toy-noise", "--glimpses", "3",
                                     "--hidden", "16", "--z-dim", "4", "--batch-size", "16", "--max-steps", "3",
                                     "--no-progress", "--out", str(run)])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(run / "checkpoint.pt")
    assert payload["plugins"]["encoder"]["plugin"] == "toy_plugin"
    assert payload["plugins"]["dataset"]["name"] == "toy-noise"
    model, _ = load_model(run / "checkpoint.pt", get_registry())
    assert isinstance(model.encoder, GRUEncoder) and model.config.image_shape == (3, 16, 16)

    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(run), "--n", "4", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    side = (2 + 2 * (16 + 2)) * 2                     # 2 x 2 grid, 2-pixel padding, scale 2
    assert iio.imread(tmp_path / "s.png").shape[:2] == (side, side)


def test_duplicate_name_warns_naming_both_plugins_and_keeps_the_first(register_plugin, cli_runner):
    register_plugin(DuplicateLSTM(), name="impostor")
    registry = get_registry()
    assert registry.get("encoder", "lstm").factory is LSTMEncoder
    assert registry.get("encoder", "lstm").plugin == "lstm"
    clash = [p for p in registry.problems if "impostor" in p]
    assert len(clash) == 1 and "'lstm'" in clash[0] and "drawkit" in clash[0]
    result = plugins_table(cli_runner)
    assert "Warning:" in result.stderr and "impostor" in result.stderr


def test_hook_that_raises_is_reported_and_the_rest_keeps_working(register_plugin):
    register_plugin(ExplodingAttention(), name="exploding")
    registry = get_registry()
    reported = [p for p in registry.problems if "exploding" in p]
    assert len(reported) == 1 and "boom in the attention hook" in reported[0]
    assert {"filterbank", "none"} <= set(registry.names("attention"))
    assert "toy-gru" in registry.names("encoder")
    model = build_model(DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2, encoder="toy-gru"), registry)
    assert model(torch.rand(2, 1, 8, 8).round()).loss.shape == (2,)


def test_registering_something_not_callable_is_reported_with_the_plugin(register_plugin):
    register_plugin(NotCallable(), name="not_callable")
    registry = get_registry()
    assert "broken-data" not in registry.names("dataset")
    assert any("not_callable" in p and "callable" in p for p in registry.problems)


class HalfValid:
    """Bad registrations between good ones: the good ones must still count."""

    @drawkit.hookimpl
    def register_datasets(self, register):
        register("broken-data", 42)
        register("toy-noise", RandomImages)

    @drawkit.hookimpl
    def register_encoders(self, register):
        register("", GRUEncoder)
        register("toy-gru-half", GRUEncoder)


def broken_rows(cli_runner):
    """`drawkit plugins`, wide enough that no row wraps: the lines of its `broken` rows, and all of stdout."""
    result = cli_runner.invoke(app, ["plugins"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.split("│")[1:2] and
            line.split("│")[1].strip() == "broken"]
    return rows, result.stdout


def test_plugins_command_lists_a_plugin_whose_hook_raises_as_broken(register_plugin, cli_runner):
    register_plugin(ExplodingAttention(), name="exploding")
    register_plugin(WithDefaults(), name="with_defaults")
    rows, output = broken_rows(cli_runner)
    assert len(rows) == 1, output
    assert "exploding" in rows[0] and "register_attention" in rows[0] and "boom in the attention hook" in rows[0]
    assert "toy-gru" in output and "toy-gru-wide" in output and "filterbank" in output  # its other hook, the rest
    registry = get_registry()
    assert registry.broken.keys() == {"exploding"} and registry.get("encoder", "toy-gru").plugin == "exploding"
    assert registry.get("attention", "toy-filterbank").plugin == "with_defaults"


def test_plugins_command_lists_invalid_registrations_as_broken_and_keeps_the_valid_ones(register_plugin, cli_runner):
    register_plugin(HalfValid(), name="half_valid")
    register_plugin(NotCallable(), name="not_callable")
    rows, output = broken_rows(cli_runner)
    assert len(rows) == 2, output
    half = next(row for row in rows if "half_valid" in row)
    assert "'broken-data'" in half and "not callable" in half and "42" in half  # both faults, one row
    assert "encoder name '', which is not a non-empty string" in half
    assert any("not_callable" in row and "'broken-data'" in row and "not callable" in row for row in rows)
    registry = get_registry()
    assert "broken-data" not in registry.names("dataset") and "" not in registry.names("encoder")
    assert registry.get("dataset", "toy-noise").plugin == "half_valid"
    assert registry.get("encoder", "toy-gru-half").plugin == "half_valid"
    assert "toy-noise" in output and "toy-gru-half" in output and "lstm" in output


def test_a_broken_row_goes_when_the_plugin_does(cli_runner):
    plugins.load_plugins()
    plugins.pm.register(ExplodingAttention(), name="exploding")
    try:
        assert "exploding" in get_registry().broken and "exploding" in plugins.broken
    finally:
        plugins.pm.unregister(name="exploding")
    assert "exploding" not in get_registry().broken and "exploding" not in plugins.broken
    assert broken_rows(cli_runner)[0] == []






@pytest.fixture
def failing_entry_point(load_again):
    """Entry points loaded again with one whose import fails."""
    load_again(FakeEntryPoint("half_installed", "drawkit-half-installed",
                              error=ImportError("No module named 'drawkit_half_installed'")))
    return "half_installed"


def test_plugin_that_fails_to_import_is_recorded_and_the_rest_keeps_working(failing_entry_point):
    why = plugins.broken[failing_entry_point]
    assert "drawkit-half-installed" in why and "ImportError" in why and "drawkit_half_installed" in why
    registry = get_registry()
    assert why in registry.problems
    assert registry.get("encoder", "lstm").package == "drawkit"


def test_plugins_command_shows_the_broken_plugin(failing_entry_point, cli_runner):
    result = plugins_table(cli_runner)
    assert "broken" in result.stdout and failing_entry_point in result.stdout
    assert "lstm" in result.stdout
    assert "Warning:" in result.stderr and "drawkit-half-installed" in result.stderr


def test_plugin_defaults_fill_unset_window_sizes(register_plugin):
    register_plugin(WithDefaults(), name="with_defaults")
    registry = get_registry()
    resolved = resolve_config(DrawConfig(encoder="toy-gru-wide"), registry)
    assert (resolved.read_size, resolved.write_size) == (3, 4)
    resolved = resolve_config(DrawConfig(encoder="toy-gru-wide", read_size=2), registry)
    assert (resolved.read_size, resolved.write_size) == (2, 4)
    resolved = resolve_config(DrawConfig(encoder="toy-gru-wide", attention="toy-filterbank"), registry)
    assert resolved.read_size == 3                    # the encoder's preference comes first
    resolved = resolve_config(DrawConfig(attention="toy-filterbank"), registry)
    assert (resolved.read_size, resolved.write_size) == (6, 5)
    resolved = resolve_config(DrawConfig(), registry)
    assert (resolved.read_size, resolved.write_size) == (2, 5)


def test_built_model_uses_the_plugin_defaults(register_plugin):
    register_plugin(WithDefaults(), name="with_defaults")
    config = DrawConfig(image_shape=(1, 10, 10), glimpses=2, hidden=8, z_dim=2, encoder="toy-gru-wide")
    model = build_model(config, get_registry())
    assert (model.attention.read_size, model.attention.write_size) == (3, 4)
    assert model.attention.read(torch.zeros(1, 1, 10, 10), torch.zeros(1, 1, 10, 10), torch.zeros(1, 8)).shape == (
        1, 2, 3, 3)


def test_encoder_options_reach_the_factory(register_plugin):
    register_plugin(ToyPlugin(), name="toy_plugin")
    config = DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2, encoder="toy-gru",
                        encoder_options={"output_size": 12})
    model = build_model(config, get_registry())
    assert model.encoder.output_size == 12
    assert model(torch.rand(3, 1, 8, 8).round()).kl.shape == (3, 2)


def test_unknown_encoder_option_names_the_accepted_ones(register_plugin):
    register_plugin(ToyPlugin(), name="toy_plugin")
    config = DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2, encoder="toy-gru",
                        encoder_options={"depth": 2})
    with pytest.raises(DrawkitError) as error:
        build_model(config, get_registry())
    assert "depth" in str(error.value) and "output_size" in str(error.value) and "toy-gru" in str(error.value)


def test_unknown_attention_option_is_refused():
    config = DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2, attention_options={"blur": 1})
    with pytest.raises(DrawkitError, match="blur"):
        build_model(config, get_registry())


def test_option_naming_a_required_argument_is_a_user_error():
    config = DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2, encoder_options={"hidden_size": 4})
    with pytest.raises(DrawkitError, match="hidden_size"):
        build_model(config, get_registry())


# --- wiring mistakes: reported at start-up and in `drawkit plugins`, never silent -----------------------


class MisspelledHook:
    @drawkit.hookimpl
    def register_attentions(self, register):  # the hook is register_attention
        register("toy-filterbank", FilterbankAttention)


class Unmarked:
    def register_encoders(self, register):  # no @hookimpl: pluggy never calls it
        register("toy-gru", GRUEncoder)

    def register_dataset(self, register):  # neither marked nor a hook's name (register_datasets)
        register("toy-noise", RandomImages)

    def register_with_care(self):  # a helper whose name is not a hook's: not reported
        pass


def unmarked_module() -> ModuleType:
    """A plugin module whose own register_encoders lacks @hookimpl, and which imports a function named like a hook."""
    module = ModuleType("drawkit_unmarked")

    def register_encoders(register):
        register("toy-gru", GRUEncoder)

    register_encoders.__module__ = module.__name__
    module.register_encoders = register_encoders
    module.register_datasets = ToyPlugin.register_datasets  # imported from elsewhere: its own module's business
    return module


class Empty:
    """A plugin with nothing in it: no hook at all."""


class Silent:
    @drawkit.hookimpl
    def register_encoders(self, register):
        pass  # forgot to call register


class WithCommand:
    @drawkit.hookimpl
    def register_commands(self, cli):
        @cli.command()
        def hello():
            typer.echo("hello")


def table_rows(text: str) -> list[list[str]]:
    """The rows of a rich table printed wide: cells stripped, a cell that wraps joined with newlines."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if not cells:
            continue
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{old}\n{new}".strip() for old, new in zip(rows[-1], cells)]
    return rows


def both_tables(cli_runner):
    """`drawkit plugins` printed wide: (the parts table's rows, the per-plugin table's rows, the whole result)."""
    result = cli_runner.invoke(app, ["plugins"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    parts, by_plugin = result.stdout.split("by plugin (one per entry point)")
    return table_rows(parts), table_rows(by_plugin), result


def test_misspelled_hook_warns_and_gets_a_row_naming_the_hook_and_the_package(load_again, cli_runner):
    load_again(FakeEntryPoint("typo", "drawkit-typo", plugin=MisspelledHook()))
    parts, by_plugin, result = both_tables(cli_runner)
    warning = next(line for line in result.stderr.splitlines() if "typo" in line)
    assert warning.startswith("Warning:") and "unknown hook register_attentions" in warning
    assert "package drawkit-typo" in warning and "did you mean register_attention?" in warning
    (row,) = [row for row in parts if row[0] == "broken"]
    assert row[1] == "typo" and row[2] == "drawkit-typo 0.0.1" and "register_attentions" in row[4]
    assert ["typo", "drawkit-typo 0.0.1", "register_attentions", "", "broken"] in by_plugin
    assert "toy-filterbank" not in get_registry().names("attention")


@pytest.mark.parametrize("plugin", [Unmarked(), unmarked_module()], ids=["object", "module"])
def test_function_named_like_a_hook_without_hookimpl_is_reported(plugin, register_plugin, cli_runner):
    register_plugin(plugin, name="unmarked")
    why = get_registry().broken["unmarked"]
    assert "defines register_encoders without @drawkit.hookimpl, so drawkit never calls it" in why
    if isinstance(plugin, Unmarked):
        assert "defines register_dataset (did you mean register_datasets?) without @drawkit.hookimpl" in why
    assert "register_with_care" not in why and "register_datasets " not in why  # a helper; an imported function
    parts, _, result = both_tables(cli_runner)
    assert any(row[:2] == ["broken", "unmarked"] and "register_encoders without" in row[4] for row in parts)
    assert "Warning: plugin 'unmarked' (registered in code) defines register_encoders" in result.stderr


@pytest.mark.parametrize("plugin, why", [
    (Empty(), "registered nothing: it has no function marked @drawkit.hookimpl"),
    (Silent(), "registered nothing: its hooks (register_encoders) registered no part and no command"),
])
def test_plugin_that_registers_nothing_gets_a_broken_row(plugin, why, register_plugin, cli_runner):
    register_plugin(plugin, name="idle")
    parts, by_plugin, result = both_tables(cli_runner)
    (row,) = [row for row in parts if row[0] == "broken"]
    assert row[1] == "idle" and why in row[4]
    assert any(row[0] == "idle" and row[-1] == "broken" for row in by_plugin)
    assert f"Warning: plugin 'idle' (registered in code) {why}" in result.stderr


def test_commands_count_as_what_a_plugin_registered(register_plugin):
    plugin = register_plugin(WithCommand(), name="with_command")
    cli = typer.Typer()
    plugin.register_commands(cli)  # what drawkit.cli does with its own app when it is imported
    registry = get_registry(cli=cli)
    assert registry.plugins["with_command"].registered["command"] == ["hello"]
    assert "with_command" not in registry.broken
    assert "registered nothing" in get_registry(cli=typer.Typer()).broken["with_command"]  # it added none there
    assert "with_command" not in get_registry().broken  # commands unknown: not judged


def test_plugins_json_is_one_object_with_the_tables_content(register_plugin, cli_runner):
    register_plugin(ToyPlugin(), name="toy_plugin")
    register_plugin(Silent(), name="idle")
    result = cli_runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert listing.keys() == {"plugins", "parts", "problems"}
    toy = next(p for p in listing["plugins"] if p["name"] == "toy_plugin")
    assert toy["hooks"] == ["register_encoders", "register_datasets"] and toy["problems"] == []
    assert toy["registered"] == {"encoder": ["toy-gru"], "attention": [], "dataset": ["toy-noise"], "command": []}
    lstm = next(p for p in listing["plugins"] if p["name"] == "lstm")
    assert (lstm["package"], lstm["version"], lstm["registered"]["encoder"]) == ("drawkit", drawkit.__version__,
                                                                                 ["lstm"])
    idle = next(p for p in listing["plugins"] if p["name"] == "idle")
    assert idle["broken"] and "registered nothing" in idle["problems"][0] and idle["problems"][0] in listing["problems"]

    parts, by_plugin, _ = both_tables(cli_runner)
    assert [[p["kind"], p["name"], f"{p['package']} {p['version']}".strip(), p["plugin"], p["description"]]
            for p in listing["parts"]] == [row for row in parts if row[0] != "broken"]
    assert [[p["name"], f"{p['package']} {p['version']}".strip(), "\n".join(p["hooks"]),
             "\n".join(f"{kind}: {', '.join(names)}" for kind, names in p["registered"].items() if names),
             "broken" if p["broken"] else "ok"] for p in listing["plugins"]] == by_plugin


def test_unknown_name_when_no_part_of_that_kind_is_installed():
    with pytest.raises(DrawkitError) as error:
        Registry().get("attention", "spotlight")
    assert str(error.value) == "unknown attention 'spotlight'; no attention is installed (see 'drawkit plugins')"


def test_misspelled_name_in_drawkit_load_plugins_warns(load_again, monkeypatch, cli_runner):
    monkeypatch.setenv("DRAWKIT_LOAD_PLUGINS", "extras, lstn")
    load_again(FakeEntryPoint("extras", "drawkit-extras", plugin=ToyPlugin()),
               FakeEntryPoint("other", "drawkit-other", plugin=WithDefaults()))
    assert plugins.pm.has_plugin("extras") and not plugins.pm.has_plugin("other")
    result = plugins_table(cli_runner)
    assert ("Warning: DRAWKIT_LOAD_PLUGINS names 'lstn', which is not installed, so nothing loads for it; "
            "installed plugin names: extras, other") in result.stderr


def test_entry_point_name_clash_names_the_skipped_package(load_again, cli_runner):
    load_again(FakeEntryPoint("lstm", "drawkit-impostor", plugin=ToyPlugin()))
    why = plugins.broken["lstm (drawkit-impostor)"]
    assert why == ("plugin 'lstm' (package drawkit-impostor) skipped, so its parts are missing: the entry-point "
                   "name 'lstm' is already used by package drawkit (entry-point names in the 'drawkit' group must "
                   "be unique across installed packages)")
    registry = get_registry()
    assert registry.get("encoder", "lstm").package == "drawkit" and "toy-gru" not in registry.names("encoder")
    with pytest.raises(DrawkitError) as error:
        registry.get("encoder", "toy-gru")
    assert str(error.value).endswith("; plugin 'lstm' of package drawkit-impostor was skipped, so its parts are "
                                     "missing")
    parts, by_plugin, result = both_tables(cli_runner)
    assert any(row[:3] == ["broken", "lstm", "drawkit-impostor 0.0.1"] and row[4] == why for row in parts)
    assert ["lstm", "drawkit-impostor 0.0.1", "", "", "broken"] in by_plugin
    assert f"Warning: {why}" in " ".join(result.stderr.split())


def test_one_module_under_two_entry_point_names_is_reported_once_in_one_line(load_again, cli_runner):
    toy = ToyPlugin()
    load_again(FakeEntryPoint("toy", "drawkit-toy", plugin=toy), FakeEntryPoint("toy_again", "drawkit-toy", plugin=toy),
               FakeEntryPoint("noisy", "drawkit-noisy", error=ImportError("first line\nsecond line")))
    assert plugins.broken["toy_again"] == ("plugin 'toy_again' (package drawkit-toy) skipped: it names the module of "
                                           "plugin 'toy' again (give each module one entry point)")
    assert plugins.broken["noisy"] == "plugin 'noisy' (package drawkit-noisy) failed to load: ImportError: first line"
    with pytest.raises(DrawkitError) as error:
        get_registry().get("encoder", "spotlight")
    assert str(error.value).endswith("; plugin 'noisy' of package drawkit-noisy failed to load, so its parts are "
                                     "missing")
    assert get_registry().get("encoder", "toy-gru").plugin == "toy"
