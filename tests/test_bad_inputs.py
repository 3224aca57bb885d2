"""Every command with bad input: exit code 2, one line starting "Error:" that names the problem, no traceback."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def case(base, *extra, expect):
    name = " ".join([BASES.get(id(base), " ".join(base)), *extra])
    return pytest.param([*base, *extra], expect, id=name)


BAD_INPUTS = [
    case(TRAIN, "--batch-size", "abc", expect="--batch-size"),
    case(TRAIN, "--batch-size", "0", expect="--batch-size"),
    case(TRAIN, "--batch-size", "-8", expect="--batch-size"),
    case(TRAIN, "--batch-size", "100000", expect="smaller --batch-size"),
    case(TRAIN, "--epochs", "0", expect="--epochs"),
    case(TRAIN, "--epochs", "1.5", expect="--epochs"),
    case(TRAIN, "--max-steps", "0", expect="--max-steps"),
    case(TRAIN, "--max-steps", "-3", expect="--max-steps"),
    case(TRAIN, "--val-images", "0", expect="--val-images"),
    case(TRAIN, "--lr", "0", expect="--lr"),
    case(TRAIN, "--lr", "-0.1", expect="--lr"),
    case(TRAIN, "--lr", "nan", expect="--lr"),
    case(TRAIN, "--lr", "inf", expect="--lr"),
    case(TRAIN, "--lr", "fast", expect="--lr"),
    case(TRAIN, "--clip", "0", expect="--clip"),
    case(TRAIN, "--clip", "-1", expect="--clip"),
    case(TRAIN, "--keep", "0", expect="--keep"),
    case(TRAIN, "--log-every", "0", expect="--log-every"),
    case(TRAIN, "--glimpses", "0", expect="--glimpses"),
    case(TRAIN, "--hidden", "-1", expect="--hidden"),
    case(TRAIN, "--z-dim", "0", expect="--z-dim"),
    case(TRAIN, "--read-size", "0", expect="--read-size"),
    case(TRAIN, "--write-size", "-2", expect="--write-size"),
    case(TRAIN, "--seed", "x", expect="--seed"),
    case(TRAIN, "--likelihood", "gaussian", expect="gaussian"),
    case(TRAIN, "--binarize", "maybe", expect="maybe"),
    case(TRAIN, "--encoder", "transformer", expect="transformer"),
    case(TRAIN, "--attention", "spotlight", expect="spotlight"),
    case(TRAIN, "--dataset", "cifar99", expect="cifar99"),
    case(TRAIN, "--preset", "paper-cifar", expect="paper-cifar"),
    case(TRAIN, "--device", "tpu", expect="tpu"),
    case(TRAIN, "--out", "{file}", expect="is a file"),
    case(TRAIN, "--compile", "--compile-mode", "fast", expect="--compile-mode"),
    case(TRAIN, "--out", "{file}/run", expect="cannot create --out"),
    case(TRAIN, "--data-dir", "{missing}", expect="--data-dir"),
    case(TRAIN, "--data-dir", "{file}", expect="--data-dir"),
    case(TRAIN, "--dataset-opt", "path={empty}", expect="found no pictures"),
    case(TRAIN, "--dataset-opt", "path={not_pictures}", expect="could read none"),
    case(TRAIN, "--dataset-opt", "path={missing}", expect="does not exist"),
    case(TRAIN, "--dataset-opt", "path={file}", expect="is not a folder"),
    case(TRAIN, "--dataset-opt", "image_size=0", expect="image_size"),
    case(TRAIN, "--dataset-opt", "image_size=big", expect="image_size"),
    case(TRAIN, "--image-size", "-8", expect="image_size"),
    case(TRAIN, "--dataset-opt", "grayscale=maybe", expect="grayscale"),
    case(TRAIN, "--dataset-opt", "colour=red", expect="colour"),
    case(TRAIN, "--dataset-opt", "nokey", expect="KEY=VALUE"),
    case(TRAIN, "--encoder-opt", "depth=2", expect="depth"),
    case(TRAIN, "--attention-opt", "=3", expect="KEY=VALUE"),
    case(["train", *TINY, "--dataset", "image-folder", "--out", "{scratch}/run"], expect="path=DIR"),
    case(["train", "--resume", "{missing}"], expect="not found"),
    case(["train", "--resume", "{empty}"], expect="not found"),
    case(["train", "--resume", "{file}"], expect="not a readable drawkit checkpoint"),
    case(RESUME, "--hidden", "16", expect="--hidden cannot change"),
    case(RESUME, "--out", "{scratch}/elsewhere", expect="--out cannot change"),
    case(RESUME, "--max-steps", "0", expect="--max-steps"),
    case(RESUME, "--epochs", "-1", expect="--epochs"),
    case(RESUME, "--keep", "0", expect="--keep"),
    case(SAMPLE, "--n", "0", expect="--n"),
    case(SAMPLE, "--n", "-2", expect="--n"),
    case(SAMPLE, "--n", "many", expect="--n"),
    case(SAMPLE, "--scale", "0", expect="--scale"),
    case(SAMPLE, "--fps", "0", expect="--fps"),
    case(SAMPLE, "--fps", "-1", expect="--fps"),
    case(SAMPLE, "--hold-last", "-1", expect="--hold-last"),
    case(SAMPLE, "--loop", "-2", expect="--loop"),
    case(SAMPLE, "--seed", "1.5", expect="--seed"),
    case(SAMPLE, "--device", "tpu", expect="tpu"),
    case(SAMPLE, "--out", "{folder}", expect="is a directory"),
    case(SAMPLE, "--out", "{file}/s.png", expect="cannot create folder"),
    case(SAMPLE, "--gif", "{folder}", expect="is a directory"),
    case(SAMPLE, "--checkpoint", "{missing}/checkpoint.pt", expect="not found"),
    case(SAMPLE, "--checkpoint", "{empty}", expect="not found"),
    case(SAMPLE, "--checkpoint", "{text_png}", expect="not a readable drawkit checkpoint"),
    case(SAMPLE, "--checkpoint", "{empty_png}", expect="not a readable drawkit checkpoint"),
    case(["sample"], expect="--checkpoint"),
    case(RECONSTRUCT, "--image", "{text_png}", expect="could not be read as a picture"),
    case(RECONSTRUCT, "--image", "{empty_png}", expect="could not be read as a picture"),
    case(RECONSTRUCT, "--image", "{missing}/x.png", expect="not found"),
    case(RECONSTRUCT, "--image", "{folder}", expect="not a file"),
    case(RECONSTRUCT, "--split", "holdout", expect="holdout"),
    case(RECONSTRUCT, "--indices", "3,x", expect="--indices"),
    case(RECONSTRUCT, "--indices", "999", expect="out of range"),
    case(RECONSTRUCT, "--indices", "-1", expect="out of range"),
    case(RECONSTRUCT, "--indices", ",", expect="--indices is empty"),
    case(RECONSTRUCT, "--n", "0", expect="--n"),
    case(RECONSTRUCT, "--scale", "0", expect="--scale"),
    case(RECONSTRUCT, "--invert", expect="--invert"),
    case(RECONSTRUCT, "--image", "{picture}", "--indices", "1", expect="either --image or --indices"),
    case(RECONSTRUCT, "--out", "{folder}", expect="is a directory"),
    case(RECONSTRUCT, "--data-dir", "{missing}", expect="--data-dir"),
    case(RECONSTRUCT, "--checkpoint", "{missing}/checkpoint.pt", expect="not found"),
    case(VISUALIZE, "--fps", "0", expect="--fps"),
    case(VISUALIZE, "--scale", "-1", expect="--scale"),
    case(VISUALIZE, "--loop", "-1", expect="--loop"),
    case(VISUALIZE, "--hold-last", "-5", expect="--hold-last"),
    case(VISUALIZE, "--n", "0", expect="--n"),
    case(VISUALIZE, "--generate", "--n", "0", expect="--n"),
    case(VISUALIZE, "--generate", "--image", "{picture}", expect="--generate"),
    case(VISUALIZE, "--image", "{text_png}", expect="could not be read as a picture"),
    case(VISUALIZE, "--image", "{empty_png}", expect="could not be read as a picture"),
    case(VISUALIZE, "--out", "{folder}", expect="is a directory"),
    case(VISUALIZE, "--strip", "{folder}", expect="is a directory"),
    case(VISUALIZE, "--split", "holdout", expect="holdout"),
    case(VISUALIZE, "--indices", "500", expect="out of range"),
    case(VISUALIZE, "--checkpoint", "{text_png}", expect="not a readable drawkit checkpoint"),
    case(EVALUATE, "--split", "holdout", expect="holdout"),
    case(EVALUATE, "--importance-samples", "0", expect="--importance-samples"),
    case(EVALUATE, "--batch-size", "0", expect="--batch-size"),
    case(EVALUATE, "--batch-size", "x", expect="--batch-size"),
    case(EVALUATE, "--max-images", "0", expect="--max-images"),
    case(EVALUATE, "--max-images", "-5", expect="--max-images"),
    case(EVALUATE, "--device", "tpu", expect="tpu"),
    case(EVALUATE, "--data-dir", "{missing}", expect="--data-dir"),
    case(EVALUATE, "--checkpoint", "{missing}/checkpoint.pt", expect="not found"),
    case(EVALUATE, "--checkpoint", "{empty_png}", expect="not a readable drawkit checkpoint"),
    case(["evaluate"], expect="--checkpoint"),
    case(["plot", "--run", "{missing}"], expect="not a folder"),
    case(["plot", "--run", "{file}"], expect="not a folder"),
    case(["plot", "--run", "{empty}"], expect="metrics.jsonl not found"),
    case(["plot", "--run", "{bad_metrics}"], expect="not JSON"),
    case(["plot", "--run", "{no_records}"], expect="no train or validation records"),
    case(["plot", "--run", "{run}", "--out", "{folder}"], expect="is a directory"),
    case(["plot", "--run", "{run}", "--out", "{file}/curves.png"], expect="cannot create folder"),
    case(["plot"], expect="--run"),
    case(["presets", "--all"], expect="--all"),
    case(["presets", "extra"], expect="extra"),
    case(["plugins", "--verbose"], expect="--verbose"),
    case(["plugins", "lstm"], expect="lstm"),
    case(["trian"], expect="trian"),
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
    return places


@pytest.mark.parametrize("args, expect", BAD_INPUTS)
def test_bad_input_gives_one_error_line_and_exit_2(cli_runner, places, args, expect):
    result = cli_runner.invoke(app, [a.format(**places) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    assert expect in lines[0], (expect, lines[0])
    leftover = Path(places["scratch"], "run")
    made = leftover.exists()
    shutil.rmtree(leftover, ignore_errors=True)  # so one case's leftover does not fail the next
    assert not made, "a refused train left a run folder behind"
