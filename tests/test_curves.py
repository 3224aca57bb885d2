"""The loss-curve picture: drawn from metrics.jsonl with matplotlib, a one-line hint without it."""
import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from drawkit.cli import app
from drawkit.curves import compared_series, curves_after_training, plot_curves, read_metrics, training_time

runner = CliRunner()
SIZE = (432, 720)                       # the figure: 6 x 3.6 inches at 120 dpi
TRAIN_BLUE, VALID_ORANGE = (0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00)


def has_colour(picture: np.ndarray, colour) -> bool:
    return bool((picture[..., :3] == colour).all(axis=-1).any())


def assert_curves(picture: np.ndarray) -> None:
    """The figure's size, both curves' colours, and more than a blank page."""
    assert picture.shape[:2] == SIZE
    assert has_colour(picture, TRAIN_BLUE) and has_colour(picture, VALID_ORANGE)
    assert len(np.unique(picture[..., :3].reshape(-1, 3), axis=0)) > 10


def write_metrics(run: Path, runs: int = 1) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(runs):  # a reused folder holds earlier runs too
        for step in (50, 100, 150):
            lines.append({"split": "train", "step": step, "epoch": 1, "loss": 300 - step})
        lines.append({"split": "valid", "step": 150, "epoch": 1, "nll_bound": 160.0, "n_images": 10})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make ``import matplotlib`` fail, as when the [plot] extra is not installed."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)


def test_plot_writes_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    run = write_metrics(tmp_path / "run")
    result = runner.invoke(app, ["plot", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {run / 'curves.png'}"
    assert_curves(iio.imread(run / "curves.png"))


def test_several_runs_are_compared_against_wall_time(tmp_path):
    pytest.importorskip("matplotlib")
    runs = []
    for name, bounds in (("slow", (190.0, 120.0, 100.0)), ("steady", (115.0, 105.0, 101.0))):
        run = tmp_path / name
        run.mkdir()
        lines = [{"split": "valid", "step": 500 * (i + 1), "time_s": 300.0 * (i + 1), "nll_bound": b}
                 for i, b in enumerate(bounds)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        runs += ["--run", str(run)]
    result = runner.invoke(app, ["plot", *runs, "--out", str(tmp_path / "both.png")])
    assert result.exit_code == 0, result.output
    picture = iio.imread(tmp_path / "both.png")
    assert picture.shape[:2] == SIZE
    assert has_colour(picture, (0x1F, 0x77, 0xB4)) and has_colour(picture, (0xFF, 0x7F, 0x0E))  # two lines
    result = runner.invoke(app, ["plot", *runs])
    assert result.exit_code == 2 and "with several --run, give --out FILE.png" in result.output


def write_validations(run: Path, key: str, values) -> Path:
    run.mkdir()
    lines = [{"split": "valid", "step": 500 * (i + 1), "time_s": 300.0 * (i + 1), key: v} for i, v in enumerate(values)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_classifier_runs_are_compared_by_error_rate_and_never_with_a_bound(tmp_path):
    eight = write_validations(tmp_path / "eight", "error_rate", (0.2, 0.08, 0.05))
    four = write_validations(tmp_path / "four", "error_rate", (0.3, 0.12))
    kind, series = compared_series([eight, four])
    assert kind == "error"
    assert series == {"eight": ([5.0, 10.0, 15.0], [20.0, 8.0, 5.0]), "four": ([5.0, 10.0], [30.0, 12.0])}
    pytest.importorskip("matplotlib")
    result = runner.invoke(app, ["plot", "--run", str(eight), "--run", str(four), "--out", str(tmp_path / "e.png")])
    assert result.exit_code == 0, result.output
    assert iio.imread(tmp_path / "e.png").shape[:2] == SIZE
    draw = write_validations(tmp_path / "draw", "nll_bound", (120.0, 100.0))
    result = runner.invoke(app, ["plot", "--run", str(eight), "--run", str(draw), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and not (tmp_path / "x.png").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "eight measure an error rate and the other runs a bound" in lines[0], lines


def test_a_resumed_run_is_plotted_against_its_whole_training_time(tmp_path):
    run = tmp_path / "resumed"
    run.mkdir()
    lines = [{"split": "train", "step": 100, "time_s": 50.0, "loss": 2.0},
             {"split": "valid", "step": 100, "time_s": 60.0, "error_rate": 0.5},
             {"split": "train", "step": 150, "time_s": 90.0, "loss": 1.0},      # then interrupted, resumed:
             {"split": "train", "step": 200, "time_s": 30.0, "loss": 0.5},      # time_s counts from the new start
             {"split": "valid", "step": 200, "time_s": 40.0, "error_rate": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [seconds for seconds, _ in training_time(read_metrics(run / "metrics.jsonl"))] == [50, 60, 90, 120, 130]
    assert compared_series([run]) == ("error", {"resumed": ([1.0, 130 / 60], [50.0, 25.0])})


def test_a_resume_is_found_by_its_start_step_even_when_time_s_goes_up(tmp_path):
    """A first process of a few seconds, then a resumed one whose first record comes later in its own time."""
    lines = [{"split": "train", "step": 2, "time_s": 3.0, "start_step": 0, "loss": 2.0},
             {"split": "train", "step": 4, "time_s": 5.0, "start_step": 0, "loss": 1.5},   # stopped at step 4
             {"split": "train", "step": 6, "time_s": 8.0, "start_step": 4, "loss": 1.0},   # resumed from step 4
             {"split": "train", "step": 8, "time_s": 9.0, "start_step": 4, "loss": 0.5},
             {"split": "train", "step": 6, "time_s": 7.0, "start_step": 4, "loss": 0.9}]   # resumed again from 4
    assert [seconds for seconds, _ in training_time(lines)] == [3, 5, 13, 14, 21]


def test_plot_to_another_file(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_curves(write_metrics(tmp_path / "run"), out=str(tmp_path / "pics" / "c.png"))
    assert out == tmp_path / "pics" / "c.png"
    assert_curves(iio.imread(out))
    assert not (tmp_path / "run" / "curves.png").exists()     # only where it was asked for


def test_only_the_latest_run_is_read(tmp_path):
    records = read_metrics(write_metrics(tmp_path / "run", runs=2) / "metrics.jsonl")
    assert [r["step"] for r in records] == [50, 100, 150, 150]


def test_without_matplotlib_a_one_line_hint(tmp_path, no_matplotlib):
    run = write_metrics(tmp_path / "run")
    result = runner.invoke(app, ["plot", "--run", str(run)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "pip install 'drawkit[plot]'" in lines[0]
    assert not (run / "curves.png").exists()


def test_training_skips_the_picture_with_a_hint(tmp_path, no_matplotlib, capsys):
    assert curves_after_training(write_metrics(tmp_path / "run")) is None
    err = capsys.readouterr().err
    assert "drawkit[plot]" in err and len(err.strip().splitlines()) == 1


def test_train_without_matplotlib_still_finishes(tmp_path, no_matplotlib):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--max-steps", "1",
                                 "--batch-size", "8", "--val-images", "8", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "drawkit[plot]" in result.stderr
    assert (out / "checkpoint.pt").is_file() and not (out / "curves.png").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", 1), ("valid", 1)]
    assert records[1]["n_images"] == 8 and records[0]["loss"] > 0


@pytest.mark.parametrize("setup, expect", [("missing_run", "--run {run} is not a folder"),
                                           ("no_metrics", "{run}/metrics.jsonl not found"),
                                           ("bad_json", "{run}/metrics.jsonl line 1 is not JSON")])
def test_plot_errors_are_one_line(tmp_path, setup, expect):
    run = tmp_path / "run"
    if setup != "missing_run":
        run.mkdir()
    if setup == "bad_json":
        (run / "metrics.jsonl").write_text("{not json\n")
    result = runner.invoke(app, ["plot", "--run", str(run)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert expect.format(run=run) in lines[0], (expect, lines[0])


def test_a_resume_after_a_kill_keeps_the_history_up_to_its_checkpoint(tmp_path):
    """Killed mid-epoch after logging step 300, resumed from the checkpoint at step 200: steps 250-300 are
    done again, and everything up to step 200 still belongs to the run."""
    lines = [{"split": "train", "step": 100, "time_s": 10.0, "start_step": 0, "loss": 2.0},
             {"split": "valid", "step": 200, "time_s": 20.0, "start_step": 0, "error_rate": 0.5},
             {"split": "train", "step": 250, "time_s": 25.0, "start_step": 0, "loss": 1.5},
             {"split": "train", "step": 300, "time_s": 30.0, "start_step": 0, "loss": 1.4},   # killed here
             {"split": "train", "step": 250, "time_s": 4.0, "start_step": 200, "loss": 1.3},
             {"split": "valid", "step": 300, "time_s": 9.0, "start_step": 200, "error_rate": 0.25}]
    run = tmp_path / "killed"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    records = read_metrics(run / "metrics.jsonl")
    assert [(r["step"], r["start_step"]) for r in records] == [(100, 0), (200, 0), (250, 200), (300, 200)]
    assert [seconds for seconds, _ in training_time(records)] == [10, 20, 24, 29]
    assert compared_series([run]) == ("error", {"killed": ([20 / 60, 29 / 60], [50.0, 25.0])})
