"""``drawkit export RUN --out DIR``: a run's model in the Hugging Face Hub's layout, loadable without pickle.

    DIR/model.safetensors   the weights (the model's state_dict)
    DIR/config.json         what rebuilds and checks the model: its config, the plugins that built it
                            (package and version), the data set and its options, the training summary
    DIR/README.md           the model card: what it is, how it was trained and scored, how to load it
    DIR/sample.png          a generative model's samples; a classifier's glimpses (glimpses.png),
                            when its test images are here

Every ``--checkpoint`` accepts DIR (drawkit/checkpoint.py reads it). It holds no optimizer or
progress, so ``drawkit train --resume`` needs the run folder itself. The files are written into a
hidden folder beside DIR and moved in when all are done, so an interrupted export leaves no
folder that loads.
"""
import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch

from drawkit import __version__
from drawkit.checkpoint import (CONFIG, EXPORT_FORMAT, EXPORT_VERSION, WEIGHTS, load_model,
                                resolve_checkpoint_path, safetensors_torch)
from drawkit.errors import DrawkitError
from drawkit.evaluate import EVALUATIONS, json_records, read_evaluations
from drawkit.frames import Style, trace_strip
from drawkit.inputs import choose_labelled_inputs
from drawkit.registry import get_registry
from drawkit.render import image_grid, save_png
from drawkit.rng import seeded
from drawkit.tasks import task_of
from drawkit.trace import trace_classification

CARD = "README.md"
SAMPLE = "sample.png"      # a generative model's picture
GLIMPSES = "glimpses.png"  # a classifier's picture
#: every file an export writes; a re-export with --force removes those it no longer writes
EXPORT_FILES = (WEIGHTS, CONFIG, CARD, SAMPLE, GLIMPSES)
#: the picture: `drawkit sample --checkpoint DIR --n 16 --seed 0 --scale 2` (or visualize-attention) on the CPU
PICTURE_COUNT = {"generate": 16, "classify": 4}
PICTURE_SEED, PICTURE_SCALE = 0, 2
#: train_config fields that name places on the training machine, left out of config.json
MACHINE_FIELDS = ("out", "data_dir")
#: metric fields that are not measures
NOT_MEASURES = ("n_images", "step", "epoch", "time_s", "start_step", "steps_per_s", "skipped_steps")


def export(run, out, force: bool = False) -> dict:
    """Write the model of ``run`` (a run folder's checkpoint.pt, or a checkpoint file) to ``out``.

    Returns {"out": the folder, "files": the names written, "note": why there is no picture, or None}.
    """
    source = resolve_checkpoint_path(run)
    out = check_destination(out, force)
    safetensors = safetensors_torch()  # before any work: one line when it is missing
    model, payload = load_model(source, get_registry(), torch.device("cpu"))
    kind = task_of(payload.get("model_config"))
    config = export_config(payload, kind)
    folder = source if source.is_dir() else source.parent
    scores = newest_evaluation(folder, payload)
    if scores is None and not payload.get("averaged_steps"):  # no validation line is an average's
        scores = validation_record(folder, payload.get("step"))
    with staging(out) as tmp:
        picture, note = write_picture(tmp, model, payload, kind)
        write_json(tmp / CONFIG, config)
        (tmp / CARD).write_text(model_card(config, kind, scores, picture, str(out)))
        safetensors.save_file(weights_of(model), str(tmp / WEIGHTS),
                              metadata={"format": "pt", "drawkit_format": EXPORT_FORMAT,
                                        "drawkit_format_version": str(EXPORT_VERSION)})
        shutil.copymode(tmp / CONFIG, tmp / WEIGHTS)  # safetensors writes it private; share it as the others
        files = sorted(path.name for path in tmp.iterdir())
    return {"out": str(out), "files": files, "note": note}


# ---- where it goes ------------------------------------------------------------------------------

def check_destination(out, force: bool) -> Path:
    """Refuse, before any work, a file, a folder holding files (unless ``force``) or a place that is not writable."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DrawkitError(f"--out {out} is a file; give a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DrawkitError(f"--out {out} already holds files; choose a new folder, or pass --force to write the "
                           f"export's files into it (its other files are kept)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DrawkitError(f"cannot create folder {out.parent} for --out: {exc.strerror or exc}") from None
    for folder in (out.parent, out) if out.is_dir() else (out.parent,):
        if not os.access(folder, os.W_OK):
            raise DrawkitError(f"cannot write --out {out}: folder {folder} is not writable")
    return out


@contextmanager
def staging(out: Path):
    """A hidden folder beside ``out`` to write into; moved into place once everything is written, else removed."""
    tmp = out.with_name(f".{out.name}.export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an export that was killed
    try:
        tmp.mkdir()
        yield tmp
        place(tmp, out)
    except OSError as exc:
        raise DrawkitError(f"could not write the export to {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def place(tmp: Path, out: Path) -> None:
    """Move the finished export to ``out``: a new or empty folder in one rename; into a folder holding files
    (--force), file by file with the weights taken out first and put in last, so that an interruption
    never leaves a folder that loads with a mix of two exports."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        return
    (out / WEIGHTS).unlink(missing_ok=True)
    written = {path.name for path in tmp.iterdir()}
    for name in EXPORT_FILES:
        if name not in written:
            (out / name).unlink(missing_ok=True)  # from an earlier export: describes another model
    for path in sorted(tmp.iterdir(), key=lambda path: path.name == WEIGHTS):
        os.replace(path, out / path.name)


# ---- what it holds -------------------------------------------------------------------------------

def weights_of(model: torch.nn.Module) -> dict:
    """The state_dict as safetensors wants it: contiguous CPU tensors that share no memory."""
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}


def export_config(payload: dict, kind) -> dict:
    """config.json: the checkpoint's records that rebuild and check the model, and a summary to read."""
    model_config = payload["model_config"]
    train_config = {k: v for k, v in (payload.get("train_config") or {}).items() if k not in MACHINE_FIELDS}
    config = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "library_name": "drawkit",
              "drawkit_version": __version__, "task": kind.name, "dataset": train_config.get("dataset"),
              "dataset_options": train_config.get("dataset_options") or {},
              "dataset_source": payload.get("dataset_source"), "binarize": train_config.get("binarize")}
    if model_config.get("likelihood"):
        config["likelihood"] = model_config["likelihood"]
    precision = train_config.get("precision") or model_config.get("precision")
    if precision:
        config["precision"] = precision
    config.update(plugins=payload.get("plugins") or {}, model_config=model_config, train_config=train_config,
                  step=payload.get("step"), training=training_summary(payload, kind))
    return config


def training_summary(payload: dict, kind) -> dict:
    """Steps trained and the best validation score (the kind's score: DRAW's bound, a classifier's error rate)."""
    best = (payload.get("progress") or {}).get("best_bound")
    best = best if isinstance(best, (int, float)) and math.isfinite(best) else None
    summary = {"steps": payload.get("step"), "validation_score": kind.score, "best_validation": best}
    if payload.get("averaged_steps"):  # written by `drawkit average`
        summary["averaged_steps"] = payload["averaged_steps"]
    return summary


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n")


def write_picture(folder: Path, model, payload: dict, kind) -> tuple[Optional[str], Optional[str]]:
    """A generative model's samples, else a classifier's glimpses over test images; (file name, why none)."""
    count = PICTURE_COUNT[kind.name]
    if kind.generative:
        with seeded(PICTURE_SEED, torch.device("cpu")):  # as `drawkit sample --seed 0` draws them
            save_png(image_grid(model.generate(count), scale=PICTURE_SCALE), folder / SAMPLE)
        return SAMPLE, None
    try:
        x, labels, _ = choose_labelled_inputs(payload, get_registry(), model.config.image_shape, n=count,
                                              seed=PICTURE_SEED)
    except DrawkitError as exc:
        return None, f"no glimpse picture in the model card: {exc}"
    with seeded(PICTURE_SEED, torch.device("cpu")):  # as `drawkit visualize-attention --seed 0` traces them
        trace = trace_classification(model, x, labels)
    save_png(trace_strip(trace, Style(scale=PICTURE_SCALE, levels=None)), folder / GLIMPSES)
    return GLIMPSES, None


# ---- how it scored -------------------------------------------------------------------------------

def newest_evaluation(folder: Path, payload: dict) -> Optional[dict]:
    """The newest `drawkit evaluate` result recorded in the run folder, of the exported weights when there is one
    (the same step, and for an average the same averaged steps: it shares its step with the newest checkpoint)."""
    records = [{**record, "source": EVALUATIONS} for record in read_evaluations(folder)
               if {"split", "n_images"} <= record.keys()]
    of_model = [record for record in records if record.get("step") == payload.get("step")
                and record.get("averaged_steps") == payload.get("averaged_steps")]
    if payload.get("averaged_steps"):
        return (of_model or [None])[-1]  # another checkpoint's scores would pass for the average's
    return (of_model or records or [None])[-1]


def validation_record(folder: Path, step: Optional[int]) -> Optional[dict]:
    """The newest validation line of metrics.jsonl at or before ``step`` (the exported checkpoint's), or None."""
    found = None
    for record in json_records(folder / "metrics.jsonl"):
        if record.get("split") == "valid" and (step is None or record.get("step", 0) <= step):
            found = {**record, "source": "metrics.jsonl"}
    return found


def measures(record: dict) -> dict:
    """The numbers of an evaluation or validation record."""
    return {k: v for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_MEASURES}


# ---- the model card ------------------------------------------------------------------------------

def model_card(config: dict, kind, scores: Optional[dict], picture: Optional[str], where: str) -> str:
    """README.md: YAML front matter for the Hub, then what the model is, its training, its scores and its use."""
    sections = [front_matter(config, kind), about(config, kind, picture), training_section(config),
                evaluation_section(config, scores), usage_section(config, kind, where)]
    return "\n".join(sections)


def front_matter(config: dict, kind) -> str:
    model = config["model_config"]
    tags = ["drawkit", "draw", "visual-attention",
            *(("image-generation", "variational-autoencoder") if kind.generative else ("image-classification",)),
            config["dataset"], f"encoder-{model.get('encoder')}", f"attention-{model.get('attention')}"]
    pipeline = "unconditional-image-generation" if kind.generative else "image-classification"
    lines = ["---", "library_name: drawkit", "license: mit", f"pipeline_tag: {pipeline}", "tags:",
             *(f"- {json.dumps(str(tag))}" for tag in tags if tag), "---", ""]
    return "\n".join(lines)


def about(config: dict, kind, picture: Optional[str]) -> str:
    model, plugins = config["model_config"], config["plugins"]
    what = ("a DRAW model (Gregor et al., 2015): it draws an image on a canvas over "
            f"{model.get('glimpses')} glimpses, each one attending to part of it" if kind.generative else
            f"DRAW's attention classifier (Gregor et al., 2015, section 4.1): it takes {model.get('glimpses')} "
            f"glimpses of an image and then names its class")
    parts = ", ".join(f"{part} `{record.get('name')}` ({package_of(record)})" for part, record in plugins.items())
    lines = [f"# {config['dataset']} {'DRAW' if kind.generative else 'DRAW classifier'} (drawkit)", "",
             f"This is {what}, trained on the `{config['dataset']}` data set with "
             f"drawkit {config['drawkit_version']}.", "",
             f"Built from these plugins: {parts}.", ""]
    if picture:
        shown = ("16 samples (seed 0)" if kind.generative else
                 "glimpses over 4 test images: the read box and the most likely class after each glimpse")
        lines += [f"![{shown}]({picture})", "", f"*{shown[0].upper()}{shown[1:]}.*", ""]
    return "\n".join(lines)


def package_of(record: dict) -> str:
    return f"{record.get('package', 'unknown')} {record.get('version', '')}".strip()


def training_section(config: dict) -> str:
    train, model, summary = config["train_config"], config["model_config"], config["training"]
    preset = train.get("preset")
    lines = ["## Training", "",
             f"Preset: `{preset}`, with the options below." if preset else "No preset: the options below.", "",
             "| option | value |", "| --- | --- |"]
    shown = {**{k: v for k, v in model.items() if k != "task"}, **train}
    lines += [f"| {key} | {table_value(value)} |" for key, value in shown.items()]
    best = summary["best_validation"]
    best = f"; best validation {summary['validation_score']}: {best:.4g}" if best is not None else ""
    averaged = summary.get("averaged_steps")
    averaged = (f"; the weights are the mean of the {len(averaged)} checkpoints of steps {averaged[0]} to "
                f"{averaged[-1]} (`drawkit average`)" if averaged else "")
    lines += ["", f"Trained for {summary['steps']} steps{best}{averaged}.", ""]
    return "\n".join(lines)


def table_value(value) -> str:
    shown = json.dumps(value) if isinstance(value, (dict, list, tuple)) or value is None else str(value)
    return f"`{shown}`".replace("|", "\\|")


def evaluation_section(config: dict, scores: Optional[dict]) -> str:
    lines = ["## Evaluation", ""]
    if scores is None and config["training"].get("averaged_steps"):
        return "\n".join(lines + ["No `drawkit evaluate` result of these averaged weights was recorded.", ""])
    if scores is None:
        return "\n".join(lines + ["No evaluation or validation was recorded for this run.", ""])
    if scores["source"] == "metrics.jsonl":
        lines.append(f"Validation at step {scores.get('step')} (from the run's metrics.jsonl; no `drawkit evaluate` "
                     f"result was saved in the run folder):")
    else:
        lines.append(f"`drawkit evaluate` on the {scores['split']} split of `{scores.get('dataset', config['dataset'])}` "
                     f"({scores['n_images']} images), {checkpoint_of(scores)} (from {scores['source']}):")
    lines += ["", "| measure | value |", "| --- | --- |"]
    lines += [f"| {key} | {value:.6g} |" for key, value in measures(scores).items()]
    return "\n".join(lines + [""])


def checkpoint_of(scores: dict) -> str:
    """Which weights an evaluation scored: one checkpoint's step, or the steps an average is the mean of."""
    averaged = scores.get("averaged_steps")
    if averaged:
        return f"the mean of the {len(averaged)} checkpoints of steps {averaged[0]} to {averaged[-1]}"
    return f"checkpoint of step {scores.get('step')}"


def usage_section(config: dict, kind, where: str) -> str:
    if kind.generative:
        commands = [f"drawkit sample --checkpoint {where} --n 16 --seed 0 --scale 2 --out samples.png",
                    f"drawkit evaluate --checkpoint {where} --split test",
                    f"drawkit visualize-attention --checkpoint {where} --out attention.gif"]
    else:
        commands = [f"drawkit evaluate --checkpoint {where} --split test",
                    f"drawkit visualize-attention --checkpoint {where} --n 4 --scale 2 --strip glimpses.png"]
    packages = sorted({package_of(record) for record in config["plugins"].values()})
    lines = ["## How to use", "", f"Install drawkit and the plugin packages it was built with ({', '.join(packages)}), "
             "then:", "", "```", *commands, "```", "", "From Python:", "", "```python", "import drawkit", "",
             f"model = drawkit.load({json.dumps(where)})", "```", "",
             f"Loading reads `{WEIGHTS}` and `{CONFIG}` only (no pickle). The folder holds no optimizer state: "
             "`drawkit train --resume` needs the original run folder.", ""]
    return "\n".join(lines)
