"""`drawkit average`: a run's newest checkpoints averaged into one checkpoint that the other commands load."""
import json
import shutil

import pytest
import torch

from drawkit.average import average_checkpoints, mean_weights
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app
from conftest import assert_one_error_line

TINY = ["--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--read-size", "2", "--write-size", "2",
        "--batch-size", "8", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli_runner, picture_folder):
    """Four epochs of four steps, each epoch's checkpoint kept (--keep 4)."""
    out = tmp_path_factory.mktemp("average") / "run"
    result = cli_runner.invoke(app, ["train", *TINY, "--dataset", "image-folder", "--dataset-opt",
                                     f"path={picture_folder}", "--dataset-opt", "image_size=8", "--dataset-opt",
                                     "grayscale=true", "--epochs", "4", "--keep", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("checkpoint-*.pt"))) == 4
    return out


def evaluate(cli_runner, checkpoint) -> dict:
    result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--json", "--no-progress",
                                     "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_average_is_the_mean_of_the_newest_checkpoints(run, cli_runner, tmp_path):
    out = tmp_path / "average.pt"
    result = cli_runner.invoke(app, ["average", str(run), "--last", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    newest = [read_checkpoint(path) for path in sorted(run.glob("checkpoint-*.pt"))[-3:]]
    average = read_checkpoint(out)
    assert average["averaged_steps"] == [payload["step"] for payload in newest] == [8, 12, 16]
    assert "optimizer" not in average and "progress" not in average
    assert average["model_config"] == newest[-1]["model_config"]
    moved = 0
    for name, value in average["model"].items():
        expected = torch.stack([payload["model"][name] for payload in newest]).mean(0)
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-8)
        moved += not torch.equal(value, newest[-1]["model"][name])
    assert moved, "the checkpoints' weights differ, so their mean differs from the newest"


def test_counters_come_from_the_newest_checkpoint():
    payloads = [{"model": {"w": torch.tensor([0.0, float(step)]), "count": torch.tensor(step)}} for step in (3, 5)]
    averaged = mean_weights(payloads)
    assert torch.equal(averaged["w"], torch.tensor([0.0, 4.0]))
    assert averaged["count"].item() == 5 and averaged["count"].dtype == torch.int64


def test_the_mean_of_one_checkpoint_scores_as_that_checkpoint(run, cli_runner):
    result = cli_runner.invoke(app, ["average", str(run), "--last", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (run / "average.pt").is_file()
    alone, newest = evaluate(cli_runner, run / "average.pt"), evaluate(cli_runner, run / "checkpoint.pt")
    assert alone["nll_bound"] == newest["nll_bound"]
    assert alone["averaged_steps"] == [16] and "averaged_steps" not in newest


@pytest.mark.parametrize("command", [["sample", "--n", "2"], ["reconstruct"], ["visualize-attention", "--n", "2"]])
def test_the_drawing_commands_load_the_average(run, cli_runner, tmp_path, command):
    cli_runner.invoke(app, ["average", str(run), "--last", "4", "--out", str(tmp_path / "mean.pt")])
    suffix = ".gif" if command[0] == "visualize-attention" else ".png"
    result = cli_runner.invoke(app, [*command, "--checkpoint", str(tmp_path / "mean.pt"), "--device", "cpu",
                                     "--out", str(tmp_path / f"out{suffix}")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"out{suffix}").is_file()


def test_the_export_of_an_average_says_so_and_shows_only_its_own_scores(run, cli_runner, tmp_path):
    pytest.importorskip("safetensors")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cli_runner.invoke(app, ["average", str(copy), "--last", "4"])
    newest = evaluate(cli_runner, copy / "checkpoint.pt")  # same step as the average: must not be taken for it
    result = cli_runner.invoke(app, ["export", str(copy / "average.pt"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "out" / "README.md").read_text()
    assert "the weights are the mean of the 4 checkpoints of steps 4 to 16 (`drawkit average`)" in card
    assert "No `drawkit evaluate` result of these averaged weights was recorded." in card
    assert f"{newest['nll_bound']:.6g}" not in card
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["training"]["averaged_steps"] == [4, 8, 12, 16]
    own = evaluate(cli_runner, copy / "average.pt")
    cli_runner.invoke(app, ["export", str(copy / "average.pt"), "--out", str(tmp_path / "out"), "--force"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "the mean of the 4 checkpoints of steps 4 to 16 (from evaluations.jsonl)" in card
    assert f"| nll_bound | {own['nll_bound']:.6g} |" in card


def test_resuming_from_the_average_is_refused(run, cli_runner, tmp_path):
    cli_runner.invoke(app, ["average", str(run), "--last", "2", "--out", str(tmp_path / "mean.pt")])
    result = cli_runner.invoke(app, ["train", "--resume", str(tmp_path / "mean.pt"), "--no-progress"])
    assert_one_error_line(result, "without training state", "cannot be resumed")


def test_checkpoints_of_another_model_are_refused(run, cli_runner, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "average.pt").unlink(missing_ok=True)  # another test may have written one
    oldest = sorted(copy.glob("checkpoint-*.pt"))[0]
    payload = read_checkpoint(oldest)
    payload["model_config"]["hidden"] = 9
    torch.save(payload, oldest)
    result = cli_runner.invoke(app, ["average", str(copy), "--last", "4"])
    assert_one_error_line(result, f"{oldest} holds another model than", "average checkpoints of one run only")
    assert not (copy / "average.pt").exists()


def test_an_interrupted_write_leaves_no_file(run, cli_runner, tmp_path, monkeypatch):
    def interrupted(obj, path, *args, **kwargs):
        open(path, "wb").write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        average_checkpoints(run, 2, str(tmp_path / "mean.pt"))
    assert list(tmp_path.iterdir()) == []
