"""Every command with bad input: exit code 2, one line starting "Error:" that names the problem, no traceback.

Each case names a phrase of the message it expects, so the right check is the one that refused the input.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app

TINY = ["--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--read-size", "2", "--write-size", "2",
        "--batch-size", "8", "--device", "cpu", "--no-progress"]
PICTURES = ["--dataset", "image-folder", "--dataset-opt", "path={pictures}", "--dataset-opt", "image_size=8",
            "--dataset-opt", "grayscale=true"]
TRAIN = ["train", *TINY, *PICTURES, "--max-steps", "1", "--out", "{scratch}/run"]
RESUME = ["train", "--resume", "{run}", "--no-progress"]
SAMPLE = ["sample", "--checkpoint", "{run}", "--n", "2", "--out", "{scratch}/s.png", "--device", "cpu"]
RECONSTRUCT = ["reconstruct", "--checkpoint", "{run}", "--out", "{scratch}/r.png", "--device", "cpu"]
VISUALIZE = ["visualize-attention", "--checkpoint", "{run}", "--n", "2", "--out", "{scratch}/a.gif",
             "--device", "cpu"]
EVALUATE = ["evaluate", "--checkpoint", "{run}", "--no-progress", "--device", "cpu"]
BASES = {id(TRAIN): "train", id(RESUME): "train --resume", id(SAMPLE): "sample", id(RECONSTRUCT): "reconstruct",
         id(VISUALIZE): "visualize-attention", id(EVALUATE): "evaluate"}


WHOLE = "must be a whole number of at least 1"
NO_DATASET_PLUGIN = ("this checkpoint needs dataset 'rects' from package 'drawkit-rects', which is not installed; "
                     "pip install drawkit-rects")


def case(base, *extra, expect):
    """``expect``: a phrase of the intended message (or a tuple of them), each with {place} names filled in,
    so a case passes only on its own error, not on another one that names the same option."""
    name = " ".join([BASES.get(id(base), " ".join(base)), *extra])
    return pytest.param([*base, *extra], (expect,) if isinstance(expect, str) else expect, id=name)


BAD_INPUTS = [
    case(TRAIN, "--batch-size", "abc", expect="Invalid value for '--batch-size'"),
    case(TRAIN, "--batch-size", "0", expect="--batch-size must be a positive whole number, got 0"),
    case(TRAIN, "--batch-size", "-8", expect="--batch-size must be a positive whole number, got -8"),
    case(TRAIN, "--batch-size", "100000",
         expect=("batch size 100000 is larger than the", "training images; use a smaller --batch-size")),
    case(TRAIN, "--epochs", "0", expect="--epochs must be a positive whole number, got 0"),
    case(TRAIN, "--epochs", "1.5", expect="Invalid value for '--epochs'"),
    case(TRAIN, "--max-steps", "0", expect="--max-steps must be at least 1, got 0"),
    case(TRAIN, "--max-steps", "-3", expect="--max-steps must be at least 1, got -3"),
    case(TRAIN, "--val-images", "0", expect="--val-images must be at least 1, got 0"),
    case(TRAIN, "--lr", "0", expect=("--lr must be a positive number", "got 0")),
    case(TRAIN, "--lr", "-0.1", expect="--lr must be a positive number, got -0.1"),
    case(TRAIN, "--lr", "nan", expect="--lr must be a positive number, got nan"),
    case(TRAIN, "--lr", "inf", expect="--lr must be a positive number, got inf"),
    case(TRAIN, "--lr", "fast", expect="Invalid value for '--lr'"),
    case(TRAIN, "--lr-decay", "0", expect="--lr-decay must be above 0 and at most 1 (1: a constant rate), got 0.0"),
    case(TRAIN, "--lr-decay", "1.5", expect="--lr-decay must be above 0 and at most 1"),
    case(TRAIN, "--lr-schedule", "linear", expect="unknown --lr-schedule 'linear'; choose one of: decay, cosine"),
    case(TRAIN, "--lr-schedule", "cosine", "--lr-decay", "0.9",
         expect="--lr-decay sets the 'decay' schedule; with --lr-schedule cosine leave it out"),
    case(["train", "--preset", "paper-cluttered", "--no-progress", "--out", "{scratch}/run"], "--lr-decay", "0.9",
         expect="with --lr-schedule cosine (the preset sets it): add --lr-schedule decay to use --lr-decay"),
    case(TRAIN, "--lr-restarts", "3", expect="--lr-restarts restarts the cosine schedule: add --lr-schedule cosine, or leave it out"),
    case(TRAIN, "--lr-schedule", "cosine", "--lr-restarts", "3,x", expect="--lr-restarts takes epochs separated by commas, e.g. 180,340; got '3,x'"),
    case(TRAIN, "--lr-schedule", "cosine", "--lr-restarts", "5,3", expect="--lr-restarts takes rising epochs above 0, e.g. 180,340; got '5,3'"),
    case(TRAIN, "--lr-schedule", "cosine", "--epochs", "4", "--lr-restarts", "2,4",
         expect="--lr-restarts 2,4: every restart must come before the last epoch (--epochs 4); raise --epochs or drop the later restarts"),
    case(TRAIN, "--clip", "0", expect=("--clip must be a positive number", "got 0")),
    case(TRAIN, "--clip", "-1", expect=("--clip must be a positive number", "got -1")),
    case(TRAIN, "--adam-beta1", "1", expect=("--adam-beta1 must be at least 0 and below 1", "got 1.0")),
    case(TRAIN, "--adam-beta1", "-0.5", expect=("--adam-beta1 must be at least 0 and below 1", "got -0.5")),
    case(TRAIN, "--keep", "0", expect="--keep must be a positive whole number, got 0"),
    case(TRAIN, "--log-every", "0", expect="--log-every must be a positive whole number, got 0"),
    case(TRAIN, "--glimpses", "0", expect="--glimpses must be a positive whole number, got 0"),
    case(TRAIN, "--hidden", "-1", expect="--hidden must be a positive whole number, got -1"),
    case(TRAIN, "--z-dim", "0", expect="--z-dim must be a positive whole number, got 0"),
    case(TRAIN, "--read-size", "0", expect="--read-size must be a positive whole number, got 0"),
    case(TRAIN, "--write-size", "-2", expect="--write-size must be a positive whole number, got -2"),
    case(TRAIN, "--seed", "x", expect="Invalid value for '--seed'"),
    case(TRAIN, "--likelihood", "gaussian", expect="unknown --likelihood 'gaussian'"),
    case(TRAIN, "--binarize", "maybe", expect="unknown --binarize 'maybe'"),
    case(TRAIN, "--encoder", "transformer", expect="unknown encoder 'transformer'"),
    case(TRAIN, "--attention", "spotlight", expect="unknown attention 'spotlight'"),
    case(TRAIN, "--dataset", "cifar99", expect="unknown dataset 'cifar99'"),
    case(TRAIN, "--preset", "paper-cifar", expect="unknown preset 'paper-cifar'"),
    case(TRAIN, "--device", "tpu", expect="unknown device 'tpu'"),
    case(TRAIN, "--out", "{file}", expect="--out {file} is a file; give a folder"),
    case(TRAIN, "--compile", "--compile-mode", "fast", expect="unknown --compile-mode 'fast'"),
    case(TRAIN, "--canvas-start", "mean", expect="unknown --canvas-start 'mean'; choose one of: zero, learned"),
    case(["train", "--task", "classify", *PICTURES, "--glimpses", "2", "--hidden", "8", "--canvas-start", "learned",
          "--no-progress", "--out", "{scratch}/run"], expect="--canvas-start is for --task generate"),
    case(TRAIN, "--kl-warmup", "-5", expect="--kl-warmup must be 0 (off) or a number of steps, got -5"),
    case(["train", "--task", "classify", "--dataset", "mnist", "--glimpses", "2", "--hidden", "8", "--kl-warmup", "100",
          "--no-progress", "--out", "{scratch}/run"], expect=("--kl-warmup weighs DRAW's KL term", "leave it out")),
    case(TRAIN, "--precision", "fp16", expect="unknown --precision 'fp16'; choose one of: fp32, bf16"),
    case(TRAIN, "--time-limit", "soon", expect="--time-limit expects a duration such as 1h30m"),
    case(TRAIN, "--time-limit", "0m", expect="--time-limit must be longer than zero"),
    case(EVALUATE, "--precision", "half", expect="unknown --precision 'half'"),
    case(RESUME, "--precision", "int8", expect="unknown --precision 'int8'"),
    case(TRAIN, "--out", "{file}/run", expect="cannot create --out folder {file}/run"),
    case(TRAIN, "--data-dir", "{missing}", expect="data directory {missing} (from --data-dir) does not exist"),
    case(TRAIN, "--data-dir", "{file}",
         expect="data directory {file} (from --data-dir) does not exist or is not a directory"),
    case(TRAIN, "--dataset-opt", "path={empty}", expect="image-folder found no pictures in {empty}"),
    case(TRAIN, "--dataset-opt", "path={not_pictures}", expect="could read none of the 2 files in {not_pictures}"),
    case(TRAIN, "--dataset-opt", "path={missing}", expect="image-folder path {missing} does not exist"),
    case(TRAIN, "--dataset-opt", "path={file}", expect="image-folder path {file} is not a folder"),
    case(TRAIN, "--dataset-opt", "image_size=0", expect=("option image_size", WHOLE, "got 0")),
    case(TRAIN, "--dataset-opt", "image_size=big", expect=("option image_size", WHOLE, "got 'big'")),
    case(TRAIN, "--image-size", "-8", expect=("option image_size", WHOLE, "got -8")),
    case(TRAIN, "--dataset-opt", "grayscale=maybe", expect="grayscale must be true or false, got 'maybe'"),
    case(TRAIN, "--dataset-opt", "colour=red",
         expect=("dataset 'image-folder' has no option 'colour'", "its options: path, image_size, grayscale")),
    case(TRAIN, "--dataset-opt", "nokey", expect="--dataset-opt expects KEY=VALUE, got 'nokey'"),
    case(TRAIN, "--encoder-opt", "depth=2", expect="encoder 'lstm' has no option 'depth'"),
    case(TRAIN, "--attention-opt", "=3", expect="--attention-opt expects KEY=VALUE, got '=3'"),
    case(TRAIN, "--attention", "filterbank", "--attention-opt", "start=wide",
         expect="unknown filterbank option start 'wide'; choose one of: blurred, sharp"),
    case(["train", *TINY, "--dataset", "image-folder", "--out", "{scratch}/run"],
         expect="image-folder needs a folder of pictures: --dataset-opt path=DIR"),
    case(["train", "--resume", "{missing}"], expect="checkpoint {missing} not found"),
    case(["train", "--resume", "{empty}"], expect="checkpoint {empty}/checkpoint.pt not found"),
    case(["train", "--resume", "{file}"], expect="{file} is not a readable drawkit checkpoint"),
    case(RESUME, "--hidden", "16", expect="--hidden cannot change when resuming"),
    case(RESUME, "--out", "{scratch}/elsewhere", expect="--out cannot change when resuming"),
    case(RESUME, "--max-steps", "0", expect="--max-steps must be at least 1, got 0"),
    case(RESUME, "--epochs", "-1", expect="--epochs must be a positive whole number, got -1"),
    case(RESUME, "--keep", "0", expect="--keep must be a positive whole number, got 0"),
    case(SAMPLE, "--n", "0", expect="--n must be a positive whole number, got 0"),
    case(SAMPLE, "--n", "-2", expect="--n must be a positive whole number, got -2"),
    case(SAMPLE, "--n", "many", expect="Invalid value for '--n'"),
    case(SAMPLE, "--scale", "0", expect="--scale must be at least 1, got 0"),
    case(SAMPLE, "--fps", "0", expect=("--fps must be above 0", "got 0")),
    case(SAMPLE, "--fps", "-1", expect=("--fps must be above 0", "got -1")),
    case(SAMPLE, "--hold-last", "-1", expect="--hold-last must be 0 or more frames, got -1"),
    case(SAMPLE, "--loop", "-2", expect=("--loop must be 0 (forever) or how many times to play", "got -2")),
    case(SAMPLE, "--seed", "1.5", expect="Invalid value for '--seed'"),
    case(SAMPLE, "--device", "tpu", expect="unknown device 'tpu'"),
    case(SAMPLE, "--out", "{folder}", expect="--out {folder} is a directory"),
    case(SAMPLE, "--out", "{file}/s.png", expect="cannot create folder {file} for --out"),
    case(SAMPLE, "--gif", "{folder}", expect="--gif {folder} is a directory"),
    case(SAMPLE, "--checkpoint", "{missing}/checkpoint.pt", expect="checkpoint {missing}/checkpoint.pt not found"),
    case(SAMPLE, "--checkpoint", "{empty}", expect="checkpoint {empty}/checkpoint.pt not found"),
    case(SAMPLE, "--checkpoint", "{text_png}", expect="{text_png} is not a readable drawkit checkpoint"),
    case(SAMPLE, "--checkpoint", "{empty_png}", expect="{empty_png} is not a readable drawkit checkpoint"),
    case(["sample"], expect="Missing option '--checkpoint'"),
    case(RECONSTRUCT, "--image", "{text_png}", expect="--image {text_png} could not be read as a picture"),
    case(RECONSTRUCT, "--image", "{empty_png}", expect="--image {empty_png} could not be read as a picture"),
    case(RECONSTRUCT, "--image", "{missing}/x.png", expect="--image {missing}/x.png not found"),
    case(RECONSTRUCT, "--image", "{folder}", expect="--image {folder} is not a file"),
    case(RECONSTRUCT, "--split", "holdout", expect="unknown --split 'holdout'"),
    case(RECONSTRUCT, "--indices", "3,x", expect=("--indices expects whole numbers separated by commas", "'3,x'")),
    case(RECONSTRUCT, "--indices", "999", expect="--indices 999 is out of range"),
    case(RECONSTRUCT, "--indices", "-1", expect="--indices -1 is out of range"),
    case(RECONSTRUCT, "--indices", ",", expect="--indices is empty"),
    case(RECONSTRUCT, "--n", "0", expect="--n must be a positive whole number, got 0"),
    case(RECONSTRUCT, "--scale", "0", expect="--scale must be at least 1, got 0"),
    case(RECONSTRUCT, "--invert", expect="--invert applies to --image files only"),
    case(RECONSTRUCT, "--image", "{picture}", "--indices", "1", expect="give either --image or --indices, not both"),
    case(RECONSTRUCT, "--out", "{folder}", expect="--out {folder} is a directory"),
    case(RECONSTRUCT, "--data-dir", "{missing}", expect="data directory {missing} (from --data-dir) does not exist"),
    case(RECONSTRUCT, "--checkpoint", "{missing}/checkpoint.pt", expect="checkpoint {missing}/checkpoint.pt not found"),
    case(VISUALIZE, "--fps", "0", expect=("--fps must be above 0", "got 0")),
    case(VISUALIZE, "--scale", "-1", expect="--scale must be at least 1, got -1"),
    case(VISUALIZE, "--loop", "-1", expect=("--loop must be 0 (forever) or how many times to play", "got -1")),
    case(VISUALIZE, "--hold-last", "-5", expect="--hold-last must be 0 or more frames, got -5"),
    case(VISUALIZE, "--n", "0", expect="--n must be a positive whole number, got 0"),
    case(VISUALIZE, "--generate", "--n", "0", expect="--n must be a positive whole number, got 0"),
    case(VISUALIZE, "--generate", "--image", "{picture}",
         expect="--generate draws from the prior; leave out --image and --indices"),
    case(VISUALIZE, "--image", "{text_png}", expect="--image {text_png} could not be read as a picture"),
    case(VISUALIZE, "--image", "{empty_png}", expect="--image {empty_png} could not be read as a picture"),
    case(VISUALIZE, "--out", "{folder}", expect="--out {folder} is a directory"),
    case(VISUALIZE, "--strip", "{folder}", expect="--strip {folder} is a directory"),
    case(VISUALIZE, "--split", "holdout", expect="unknown --split 'holdout'"),
    case(VISUALIZE, "--indices", "500", expect="--indices 500 is out of range"),
    case(VISUALIZE, "--checkpoint", "{text_png}", expect="{text_png} is not a readable drawkit checkpoint"),
    case(EVALUATE, "--split", "holdout", expect="unknown --split 'holdout'"),
    case(EVALUATE, "--importance-samples", "0", expect="--importance-samples must be a positive whole number, got 0"),
    case(EVALUATE, "--batch-size", "0", expect="--batch-size must be a positive whole number, got 0"),
    case(EVALUATE, "--batch-size", "x", expect="Invalid value for '--batch-size'"),
    case(EVALUATE, "--max-images", "0", expect="--max-images must be a positive whole number, got 0"),
    case(EVALUATE, "--max-images", "-5", expect="--max-images must be a positive whole number, got -5"),
    case(EVALUATE, "--device", "tpu", expect="unknown device 'tpu'"),
    case(EVALUATE, "--data-dir", "{missing}", expect="data directory {missing} (from --data-dir) does not exist"),
    case(EVALUATE, "--checkpoint", "{missing}/checkpoint.pt", expect="checkpoint {missing}/checkpoint.pt not found"),
    case(EVALUATE, "--checkpoint", "{empty_png}", expect="{empty_png} is not a readable drawkit checkpoint"),
    case(["evaluate"], expect="Missing option '--checkpoint'"),
    case(["plot", "--run", "{missing}"], expect="--run {missing} is not a folder"),
    case(["plot", "--run", "{file}"], expect="--run {file} is not a folder"),
    case(["plot", "--run", "{empty}"], expect="{empty}/metrics.jsonl not found"),
    case(["plot", "--run", "{bad_metrics}"], expect="{bad_metrics}/metrics.jsonl line 2 is not JSON"),
    case(["plot", "--run", "{no_records}"], expect="{no_records}/metrics.jsonl has no train or validation records"),
    case(["plot", "--run", "{run}", "--out", "{folder}"], expect="--out {folder} is a directory"),
    case(["plot", "--run", "{run}", "--out", "{file}/curves.png"], expect="cannot create folder {file} for --out"),
    case(["plot"], expect="Missing option '--run'"),
    case(["presets", "--all"], expect="No such option: --all"),
    case(["presets", "extra"], expect=("unexpected extra argument", "(extra)")),
    case(["plugins", "--verbose"], expect="No such option: --verbose"),
    case(["plugins", "lstm"], expect=("unexpected extra argument", "(lstm)")),
    case(["trian"], expect=("No such command 'trian'", "Did you mean 'train'?")),
    case(TRAIN, "--task", "clasify", expect="unknown --task 'clasify'; choose one of: generate, classify"),
    case(["train", "--task", "classify", *PICTURES, "--glimpses", "2", "--hidden", "8", "--batch-size", "8",
          "--no-progress", "--out", "{scratch}/run"],
         expect=("dataset 'image-folder' has no labels", "--task classify cannot use it")),
    case(TRAIN, "--task", "classify", expect="--z-dim is for --task generate"),  # TRAIN sets --z-dim
    case(RESUME, "--task", "classify", expect="--task cannot change when resuming"),
    case(RESUME, "--glimpses", "4", expect="--glimpses cannot change when resuming: it is 2 in this run, not 4"),
    case(RESUME, "--lr", "0.5", expect="--lr cannot change when resuming: it is 0.001 in this run, not 0.5"),
    case(RESUME, "--dataset-opt", "image_size=16",
         expect="--dataset-opt image_size cannot change when resuming: it is 8 in this run, not 16"),
    case(RESUME, "--image-size", "16", expect="--image-size cannot change when resuming: it is 8 in this run, not 16"),
    case(EVALUATE, "--checkpoint", "{no_dataset_plugin}", expect=NO_DATASET_PLUGIN),
    case(RECONSTRUCT, "--checkpoint", "{no_dataset_plugin}", expect=NO_DATASET_PLUGIN),
    case(VISUALIZE, "--checkpoint", "{no_dataset_plugin}", expect=NO_DATASET_PLUGIN),
    case(["train", "--resume", "{no_dataset_plugin}"], expect=NO_DATASET_PLUGIN),
    case(["train", "--resume", "{no_attention_plugin}"],
         expect="this checkpoint needs attention 'crop' from package 'drawkit-a', which is not installed; "
                "pip install drawkit-a"),
    case(SAMPLE, "--checkpoint", "{other_package}",
         expect=("this checkpoint's attention 'filterbank' came from package drawkit-a 0.1, but 'filterbank' is "
                 "now supplied by package drawkit", "pip install drawkit-a")),
    case(["train", "--resume", "{other_package}"], expect="attention 'filterbank' came from package drawkit-a 0.1"),
    case(["plugins", "--json=yes"], expect="Option '--json' does not take a value"),
    case(["average", "{missing}"], expect="{missing} is not a run folder"),
    case(["average", "{run}", "--last", "0"], expect="--last must be at least 1, got 0"),
    case(["average", "{run}", "--last", "50"],
         expect=("checkpoint-<step>.pt file(s), fewer than --last 50", "train with --keep 50 to keep more")),
    case(["average", "{run}", "--last", "1", "--out", "{folder}"], expect="--out {folder} is a directory"),
    case(["average", "{run}", "--last", "1", "--out", "{run}/checkpoint.pt"],
         expect="would replace the run's newest checkpoint"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory, cli_runner):
    """Paths the table refers to: a trained run, pictures good and bad, empty and missing folders, plain files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    names = {name: root / name for name in ("pictures", "not_pictures", "empty", "folder", "scratch",
                                            "bad_metrics", "no_records")}
    for folder in names.values():
        folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(names["pictures"] / f"p{i:02d}.png")
    (names["not_pictures"] / "x.png").write_text("this is text, not a picture")
    (names["not_pictures"] / "empty.png").write_bytes(b"")
    (names["bad_metrics"] / "metrics.jsonl").write_text('{"split": "train", "step": 1, "loss": 3.0}\nnot json\n')
    (names["no_records"] / "metrics.jsonl").write_text("")
    names.update(run=root / "run", missing=root / "missing", file=root / "notes.txt", text_png=root / "x.png",
                 empty_png=root / "empty.png", picture=names["pictures"] / "p00.png")
    names["file"].write_text("a plain file")
    names["text_png"].write_text("this is text, not a picture")
    names["empty_png"].write_bytes(b"")
    places = {name: str(path) for name, path in names.items()}
    args = [a.format(**places) for a in ["train", *TINY, *PICTURES, "--epochs", "1", "--out", "{run}"]]
    result = cli_runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # the run as if its parts had come from packages that are not installed, or not the ones installed now
    for name, kind, record, config in [
            ("no_dataset_plugin", "dataset", {"name": "rects", "package": "drawkit-rects"}, {"dataset": "rects"}),
            ("no_attention_plugin", "attention", {"name": "crop", "package": "drawkit-a"}, {"attention": "crop"}),
            ("other_package", "attention", {"package": "drawkit-a", "version": "0.1"}, {})]:
        payload = read_checkpoint(places["run"])
        payload["plugins"][kind].update(record)
        payload["train_config" if kind == "dataset" else "model_config"].update(config)
        (root / name).mkdir()
        torch.save(payload, root / name / "checkpoint.pt")
        places[name] = str(root / name)
    return places


@pytest.mark.parametrize("args, expect", BAD_INPUTS)
def test_bad_input_gives_one_error_line_and_exit_2(cli_runner, places, args, expect):
    result = cli_runner.invoke(app, [a.format(**places) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    for fragment in expect:
        assert fragment.format(**places) in lines[0], (fragment.format(**places), lines[0])
    leftover = Path(places["scratch"], "run")
    made = leftover.exists()
    shutil.rmtree(leftover, ignore_errors=True)  # so one case's leftover does not fail the next
    assert not made, "a refused train left a run folder behind"
