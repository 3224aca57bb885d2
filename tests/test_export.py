"""`drawkit export RUN --out DIR`: the Hub's layout, and every --checkpoint reading DIR without pickle.

The run is a copy of the tiny session run (conftest's ``mnist_run``), so it can be deleted after
exporting: whatever works from DIR then works without the run folder.
"""
import json
import pickle
import shutil
import sys

import pytest
import torch

from drawkit.checkpoint import load_model, read_checkpoint
from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.registry import get_registry
from conftest import assert_one_error_line

EXPORT_FILES = ["README.md", "config.json", "model.safetensors", "sample.png"]
CLASSIFIER = ["--task", "classify", "--glimpses", "3", "--hidden", "16", "--read-size", "2", "--batch-size", "16",
              "--max-steps", "5", "--val-images", "64", "--no-progress"]


def copy_run(source, tmp_path, name="run"):
    run = tmp_path / name
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("evaluations.jsonl"))  # other modules' evaluations
    return run


def export(cli_runner, run, out, *extra):
    result = cli_runner.invoke(app, ["export", str(run), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist_run, cli_runner):
    """(DIR, samples.png drawn from the run before it was deleted): the run is gone, its export remains."""
    tmp = tmp_path_factory.mktemp("export")
    run = copy_run(mnist_run, tmp)
    before = tmp / "before.png"
    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(run), "--n", "9", "--seed", "3",
                                     "--device", "cpu", "--out", str(before)])
    assert result.exit_code == 0, result.output
    export(cli_runner, run, tmp / "exported")
    shutil.rmtree(run)
    return tmp / "exported", before


def test_export_writes_the_hub_layout(exported):
    folder, _ = exported
    assert sorted(path.name for path in folder.iterdir()) == EXPORT_FILES
    assert (folder / "sample.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(folder.parent.glob(".exported.export-*")), "the staging folder was left behind"


def test_sample_from_the_export_matches_the_deleted_run(exported, cli_runner, tmp_path):
    folder, before = exported
    after = tmp_path / "after.png"
    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(folder), "--n", "9", "--seed", "3",
                                     "--device", "cpu", "--out", str(after)])
    assert result.exit_code == 0, result.output
    assert after.read_bytes() == before.read_bytes()


@pytest.mark.parametrize("command", [
    ["evaluate", "--max-images", "32", "--no-progress", "--device", "cpu"],
    ["reconstruct", "--n", "4", "--device", "cpu", "--out", "{tmp}/r.png"],
    ["visualize-attention", "--n", "2", "--device", "cpu", "--out", "{tmp}/a.gif"],
])
def test_commands_that_take_a_checkpoint_accept_the_export(exported, cli_runner, tmp_path, command):
    folder, _ = exported
    args = [part.format(tmp=tmp_path) for part in command]
    result = cli_runner.invoke(app, [args[0], "--checkpoint", str(folder), *args[1:]])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in folder.iterdir()) == EXPORT_FILES  # nothing recorded into it


def test_loading_the_export_uses_no_pickle(exported, mnist_run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    for module, name in [(torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    with pytest.raises(DrawkitError):
        read_checkpoint(mnist_run)  # a checkpoint.pt does need them: the patch bites
    folder, _ = exported
    model, payload = load_model(folder, get_registry())
    assert "optimizer" not in payload and "progress" not in payload
    assert model.generate(2).shape == (2, 1, 28, 28)


def test_drawkit_load_reads_the_export(exported):
    import drawkit

    model = drawkit.load(str(exported[0]), device="cpu")
    assert model.task == "generate" and model.config.glimpses == 3


def test_the_export_gives_the_checkpoints_weights_and_records(exported, mnist_run):
    folder, _ = exported
    original, exported_payload = read_checkpoint(mnist_run), read_checkpoint(folder)
    for key in ("model_config", "plugins", "step"):
        assert exported_payload[key] == original[key], key
    assert original["model"].keys() == exported_payload["model"].keys()
    for name, tensor in original["model"].items():
        assert torch.equal(tensor, exported_payload["model"][name]), name


def test_config_json_has_what_rebuilds_and_describes_the_model(exported, mnist_run):
    folder, _ = exported
    config = json.loads((folder / "config.json").read_text())
    original = read_checkpoint(mnist_run)
    assert config["format"] == "drawkit-export" and config["drawkit_version"]
    assert config["task"] == "generate" and config["dataset"] == "mnist" and config["dataset_options"] == {}
    assert config["binarize"] == original["train_config"]["binarize"] and config["likelihood"] == "bernoulli"
    assert config["plugins"] == original["plugins"]
    assert {"package", "version"} <= config["plugins"]["encoder"].keys()
    assert config["model_config"] == json.loads(json.dumps(original["model_config"]))
    assert config["training"]["steps"] == 5 and config["training"]["validation_score"] == "nll_bound"
    assert config["training"]["best_validation"] == pytest.approx(original["progress"]["best_bound"])
    assert "out" not in config["train_config"] and "data_dir" not in config["train_config"]


def test_model_card_names_the_options_and_shows_the_sample(exported):
    folder, _ = exported
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: drawkit" in front and '- "mnist"' in front
    assert "No preset" in body and "| glimpses | `3` |" in body and "| max_steps | `5` |" in body
    assert "(sample.png)" in body and (folder / "sample.png").is_file()
    assert f"drawkit sample --checkpoint {folder}" in body and f'drawkit.load("{folder}")' in body
    assert "Validation at step 5" in body and "| nll_bound |" in body  # no evaluate result: metrics.jsonl's


def test_model_card_takes_the_newest_evaluate_result_and_the_preset(mnist_run, cli_runner, tmp_path):
    run = copy_run(mnist_run, tmp_path)
    for images in ("16", "32"):  # recorded in RUN/evaluations.jsonl, the newest last
        result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(run), "--max-images", images,
                                         "--no-progress", "--device", "cpu"])
        assert result.exit_code == 0, result.output
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["train_config"]["preset"] = "paper-mnist"
    torch.save(payload, run / "checkpoint.pt")
    export(cli_runner, run, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Preset: `paper-mnist`" in card
    assert "`drawkit evaluate` on the test split of `mnist` (32 images)" in card and "evaluations.jsonl" in card


def test_resuming_from_the_export_is_refused_in_one_line(exported, cli_runner):
    folder, _ = exported
    result = cli_runner.invoke(app, ["train", "--resume", str(folder)])
    assert_one_error_line(result, "written by 'drawkit export'", "cannot be resumed", "run folder")


def test_the_export_is_checked_for_its_plugin_packages(exported, tmp_path, cli_runner):
    folder = tmp_path / "edited"
    shutil.copytree(exported[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["plugins"]["encoder"]["version"] = "0.0.1"
    (folder / "config.json").write_text(json.dumps(config))
    result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(folder), "--max-images", "16", "--no-progress",
                                     "--device", "cpu"])
    assert result.exit_code == 0 and "Warning: this checkpoint's encoder 'lstm' came from drawkit 0.0.1" in result.output
    config["plugins"]["encoder"]["package"] = "drawkit-lstm"
    (folder / "config.json").write_text(json.dumps(config))
    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(folder), "--out", str(tmp_path / "s.png")])
    assert_one_error_line(result, "encoder 'lstm' came from package drawkit-lstm", "pip install drawkit-lstm")


def test_a_classifier_exports_and_evaluates_from_the_folder(cli_runner, tmp_path):
    run = tmp_path / "classifier"
    result = cli_runner.invoke(app, ["train", *CLASSIFIER, "--out", str(run)])
    assert result.exit_code == 0, result.output
    evaluate = ["evaluate", "--max-images", "32", "--json", "--no-progress", "--device", "cpu", "--checkpoint"]
    from_run = json.loads(cli_runner.invoke(app, [*evaluate, str(run)]).stdout.strip().splitlines()[-1])
    export(cli_runner, run, tmp_path / "out")
    shutil.rmtree(run)
    result = cli_runner.invoke(app, [*evaluate, str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    from_export = json.loads(result.stdout.strip().splitlines()[-1])
    assert from_export["error_rate"] == from_run["error_rate"] and from_export["nll"] == from_run["nll"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["task"] == "classify" and config["training"]["validation_score"] == "error_rate"
    assert "likelihood" not in config
    assert (tmp_path / "out" / "glimpses.png").is_file() and not (tmp_path / "out" / "sample.png").exists()
    sample = cli_runner.invoke(app, ["sample", "--checkpoint", str(tmp_path / "out"), "--out", str(tmp_path / "s.png")])
    assert_one_error_line(sample, "needs a generative checkpoint")


def test_a_run_without_a_checkpoint_is_refused(cli_runner, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli_runner.invoke(app, ["export", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert_one_error_line(result, "checkpoint.pt not found")
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_files_is_refused_unless_forced(mnist_run, cli_runner, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (out / "glimpses.png").write_text("from an earlier export of a classifier")
    result = cli_runner.invoke(app, ["export", str(mnist_run), "--out", str(out)])
    assert_one_error_line(result, f"--out {out} already holds files", "--force")
    assert not (out / "model.safetensors").exists()
    export(cli_runner, mnist_run, out, "--force")
    names = sorted(path.name for path in out.iterdir())
    assert names == sorted([".gitattributes", *EXPORT_FILES])  # kept; the stale picture gone
    load_model(out, get_registry())


def test_an_empty_folder_is_written_into(mnist_run, cli_runner, tmp_path):
    (tmp_path / "out").mkdir()
    export(cli_runner, mnist_run, tmp_path / "out")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == EXPORT_FILES


def test_a_file_or_an_unwritable_place_is_refused(mnist_run, cli_runner, tmp_path):
    (tmp_path / "file").write_text("")
    result = cli_runner.invoke(app, ["export", str(mnist_run), "--out", str(tmp_path / "file")])
    assert_one_error_line(result, "is a file")
    result = cli_runner.invoke(app, ["export", str(mnist_run), "--out", str(tmp_path / "file" / "out")])
    assert_one_error_line(result, "cannot create folder")


def test_an_interrupted_export_leaves_no_folder(mnist_run, cli_runner, tmp_path, monkeypatch):
    import safetensors.torch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    result = cli_runner.invoke(app, ["export", str(mnist_run), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == [], "a folder was left behind"


def test_without_safetensors_export_names_the_package_and_checkpoints_still_load(mnist_run, cli_runner, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    result = cli_runner.invoke(app, ["export", str(mnist_run), "--out", str(tmp_path / "out")])
    assert_one_error_line(result, "pip install safetensors")
    assert not (tmp_path / "out").exists()
    load_model(mnist_run, get_registry())
