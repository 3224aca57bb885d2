"""`drawkit report RUN`: one HTML page that says what a run is, to keep or to send to someone.

The page holds everything itself (pictures as data: URIs, the style inline, no scripts), so it
opens the same from a mail attachment, offline, years later. It shows the settings and plugins the
checkpoint records, the curves of metrics.jsonl, pictures made afresh from the checkpoint with a
fixed seed by the same functions as `drawkit sample`, `reconstruct` and `visualize-attention`, and
the newest `drawkit evaluate` result per split from RUN/evaluations.jsonl. What the checkpoint's
kind of model cannot do (a classifier draws nothing) is left out: the kind says so, not a list here.
"""
import base64
import html
import json
import shlex
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from drawkit import __version__
from drawkit.checkpoint import BEST, FILENAME, read_checkpoint
from drawkit.curves import METRICS, PlottingUnavailable, plot_curves
from drawkit.data import SPLITS
from drawkit.errors import DataNotFound, DrawkitError, check_choice
from drawkit.evaluate import EVALUATIONS, read_evaluations
from drawkit.outputs import atomic_write, output_path
from drawkit.tasks import task_of

REPORT = "report.html"
CHECKPOINTS = {"best": BEST, "last": FILENAME}  # --checkpoint -> the file in the run folder
SAMPLES = 16          # images in the sample grid and the generation GIF
TRACED = 4            # inputs in the attention (or glimpse) trace
RECONSTRUCTED = 8     # inputs beside their reconstructions
SCALE = 2             # every picture upscaled this much (nearest neighbour)
MIME = {".png": "image/png", ".gif": "image/gif"}

#: evaluate's measures, in the order the table shows them: key -> (column heading, format)
MEASURES = {
    "nll_bound": ("bound (nats/image)", "{:.2f}"),
    "bits_per_dim": ("bits/dim", "{:.4f}"),
    "iw_nll": ("importance-weighted bound (nats/image)", "{:.2f}"),
    "error_rate": ("error rate", "{:.2%}"),
    "accuracy": ("accuracy", "{:.2%}"),
    "nll": ("cross-entropy (nats/image)", "{:.4f}"),
}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; background: #fff; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta, figcaption, .note { color: #555; font-size: 0.9em; }
.note { background: #fff8e1; border-left: 3px solid #f0b400; padding: 0.4em 0.8em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { text-align: left; padding: 0.2em 0.8em 0.2em 0; vertical-align: top; }
th { font-weight: 600; }
td code, pre { font: 13px/1.4 ui-monospace, monospace; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; white-space: pre-wrap; }
figure { display: inline-block; margin: 0 1.5em 1em 0; vertical-align: top; }
img.pixels { image-rendering: pixelated; }
img { max-width: 100%; }
"""


class Picture(NamedTuple):
    """A picture file made for the page and what to say under it."""

    path: Path
    caption: str
    pixels: bool = True  # pixel art: shown sharp, never smoothed


class Report(NamedTuple):
    """What `drawkit report` wrote and what the page had to leave out."""

    html: Path
    checkpoint: Path
    notes: list


def write_report(run, out: Optional[str] = None, checkpoint: str = "best", seed: int = 0,
                 device: str = "auto") -> Report:
    """Write RUN/report.html (or ``out``): the run's settings, plugins, curves, fresh pictures, evaluations."""
    run = run_folder(run)
    path, notes = choose_checkpoint(run, checkpoint)
    out = output_path(out or run / REPORT, "--out")
    payload = read_checkpoint(path)
    kind = task_of(payload.get("model_config"))
    with tempfile.TemporaryDirectory(prefix="drawkit-report-") as tmp:
        curves, curve_notes = curve_section(run, Path(tmp))
        pictures, picture_notes = picture_section(path, kind, Path(tmp), seed, device)
        sections = [settings_section(payload), plugins_section(payload), curves, pictures,
                    evaluations_section(run)]
        page = html_page(run, path, payload, kind, notes, sections)
    with atomic_write(out) as tmp_file:
        tmp_file.write_text(page, encoding="utf-8")
    return Report(out, path, notes + curve_notes + picture_notes)


def run_folder(run) -> Path:
    """The run folder, refused in one line when it is not one."""
    folder = Path(run).expanduser()
    if not folder.is_dir():
        raise DrawkitError(f"{folder} is not a folder; pass the --out folder of 'drawkit train'")
    if not any((folder / name).is_file() for name in (FILENAME, BEST, METRICS)):
        raise DrawkitError(f"{folder} is not a run folder (no {FILENAME} or {METRICS}); pass the --out folder "
                           f"of 'drawkit train'")
    return folder


def choose_checkpoint(run: Path, which: str) -> tuple[Path, list]:
    """RUN/best.pt for "best" (checkpoint.pt, with a note, before any validation saved one), checkpoint.pt for "last"."""
    check_choice("--checkpoint", which, CHECKPOINTS)
    wanted = run / CHECKPOINTS[which]
    if wanted.is_file():
        return wanted, []
    last = run / FILENAME
    if which == "best" and last.is_file():
        return last, [f"no {BEST} yet (no validation has saved one): the pictures come from {FILENAME}"]
    missing = f"{BEST} or {FILENAME}" if which == "best" else FILENAME
    raise DrawkitError(f"{run} has no {missing}: 'drawkit train' has saved no checkpoint there yet; pass a run "
                       f"folder once training has saved one")


# --- the page -----------------------------------------------------------------------------------------


def html_page(run: Path, checkpoint: Path, payload: dict, kind, notes: list, sections: list[str]) -> str:
    """The whole document: a title, what it was made from, each section, and nothing fetched from elsewhere."""
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    step = payload.get("step")
    meta = (f"{kind.name} model, step {step if step is not None else '?'}, pictures from {checkpoint.name}; "
            f"written {written} by drawkit {__version__}")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>drawkit report: {esc(run.name)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>drawkit report: {esc(run.name)}</h1>
<p class="meta">{esc(meta)}</p>
{"".join(note(text) for text in notes)}
{"".join(sections)}
</body>
</html>
"""


def esc(value) -> str:
    return html.escape(str(value))


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>\n'


def section(title: str, body: str) -> str:
    return f"<section>\n<h2>{esc(title)}</h2>\n{body}</section>\n"


def table(headings: list, rows: list[list]) -> str:
    """An HTML table of already escaped cells."""
    head = "".join(f"<th>{cell}</th>" for cell in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def data_uri(path: Path) -> str:
    """The file itself inside the page, so the page needs nothing beside it."""
    return f"data:{MIME[path.suffix]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figure(picture: Picture) -> str:
    pixels = ' class="pixels"' if picture.pixels else ""
    return (f'<figure><img{pixels} src="{data_uri(picture.path)}" alt="{esc(picture.caption)}">'
            f"<figcaption>{esc(picture.caption)}</figcaption></figure>\n")


# --- the sections -------------------------------------------------------------------------------------


def shown(value) -> str:
    """A config value as the user would type it: JSON for lists and dicts, 'unset' for None."""
    if value is None:
        return "unset"
    return json.dumps(value) if isinstance(value, (dict, list, tuple, bool)) else str(value)


def training_command(train_config: dict, model_config: dict) -> str:
    """A `drawkit train` command with every recorded setting spelled out (so a preset's values show too)."""
    from typer.main import get_command

    from drawkit.cli import TRAIN_OPTIONS, app  # which option sets which config field is the CLI's to say

    flags = {param.name: (param.opts, param.secondary_opts) for param in get_command(app).commands["train"].params}
    words = ["drawkit", "train"]
    for option, (where, field, _) in TRAIN_OPTIONS.items():
        config = model_config if where == "model" else train_config
        if option in ("image_size", "grayscale") or field not in config or config[field] in (None, {}):
            continue  # image_size and grayscale are in --dataset-opt; unset ones keep their defaults
        (flag, *_), off = flags[option]
        value = config[field]
        if isinstance(value, bool):
            words += [flag] if value else off[:1]  # a flag without an off form is off when left out
        elif isinstance(value, dict):
            for key, item in value.items():
                words += [flag, f"{key}={item if isinstance(item, str) else json.dumps(item)}"]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def settings_section(payload: dict) -> str:
    """How the run was trained: as a command, then train_config and model_config field by field."""
    train_config = payload.get("train_config") or {}
    model_config = payload.get("model_config") or {}
    preset = train_config.get("preset")
    body = f"<p>Preset: <code>{esc(preset)}</code> (its values are in the settings below)</p>\n" if preset else ""
    body += ("<p>The recorded settings as one command (a resumed run records its latest):</p>\n"
             f"<pre>{esc(training_command(train_config, model_config))}</pre>\n")
    for title, config in (("train_config", train_config), ("model_config", model_config)):
        rows = [[f"<code>{esc(key)}</code>", f"<code>{esc(shown(value))}</code>"] for key, value in config.items()]
        body += f"<h3>{title}</h3>\n" + table(["field", "value"], rows)
    return section("Training settings", body)


def plugins_section(payload: dict) -> str:
    """Which plugin, from which package and version, supplied each part of the model and the data set."""
    records = payload.get("plugins") or {}
    if not records:
        return section("Plugins", note("this checkpoint does not record the plugins that built it"))
    rows = [[esc(kind), f"<code>{esc(r.get('name', ''))}</code>", esc(r.get("plugin", "")),
             esc(r.get("package", "")), esc(r.get("version", ""))]
            for kind, r in records.items() if isinstance(r, dict)]
    return section("Plugins", table(["part", "name", "plugin", "package", "version"], rows))


def curve_section(run: Path, tmp: Path) -> tuple[str, list]:
    """The curves of `drawkit plot`; without matplotlib (or metrics) the page says why there are none."""
    try:
        path = plot_curves(run, tmp / "curves.png")
    except PlottingUnavailable as exc:
        return section("Curves", note(str(exc))), [f"no curves: {exc}"]
    except DrawkitError as exc:
        return section("Curves", note(f"no curves: {exc}")), [f"no curves: {exc}"]
    caption = f"from {METRICS}, as 'drawkit plot' draws it"
    return section("Curves", figure(Picture(path, caption, pixels=False))), []


def picture_section(checkpoint: Path, kind, tmp: Path, seed: int, device: str) -> tuple[str, list]:
    """Pictures made now from the checkpoint: what its kind can show, each one or a note why it is missing."""
    makers = generative_pictures if kind.generative else classifier_pictures
    body, notes = "", []
    for make in makers(checkpoint, tmp, seed, device):
        try:
            pictures, made_notes = make()
        except DataNotFound as exc:  # the run's data set is not on this machine: the other pictures still come
            pictures, made_notes = [], [f"a picture needs the run's data set, which is not here: {exc}"]
        body += "".join(figure(picture) for picture in pictures) + "".join(note(text) for text in made_notes)
        notes += made_notes
    return section(f"Pictures (made now from {checkpoint.name}, seed {seed})", body), notes


def generative_pictures(checkpoint: Path, tmp: Path, seed: int, device: str) -> list[Callable]:
    """A sample grid with the GIF of its drawing, the attention trace over test images, reconstructions."""
    from drawkit.reconstruct import reconstruct
    from drawkit.sample import sample

    def samples():
        sample(checkpoint, n=SAMPLES, out=tmp / "samples.png", gif=tmp / "generation.gif", seed=seed,
               device=device, scale=SCALE)
        return [Picture(tmp / "samples.png", f"{SAMPLES} samples from the prior"),
                Picture(tmp / "generation.gif", "the same samples drawn glimpse by glimpse: sigmoid(c_t)")], []

    def reconstructions():
        result = reconstruct(checkpoint, n=RECONSTRUCTED, out=tmp / "reconstructions.png", seed=seed,
                             device=device, scale=SCALE)
        return [Picture(tmp / "reconstructions.png", f"the first {result['images']} test images beside their "
                        f"reconstructions (mean bound {result['bound']:.2f} nats/image)")], []

    return [samples, attention_trace(checkpoint, tmp, seed, device, "attention trace: read box on the input, "
                                     "write box on the canvas"), reconstructions]


def classifier_pictures(checkpoint: Path, tmp: Path, seed: int, device: str) -> list[Callable]:
    """A classifier draws nothing: its glimpses are what there is to see."""
    return [attention_trace(checkpoint, tmp, seed, device, "glimpse trace: the read box and the class believed "
                            "after each glimpse, then the label")]


def attention_trace(checkpoint: Path, tmp: Path, seed: int, device: str, caption: str) -> Callable:
    """`drawkit visualize-attention` on the first test images; its note (no windows, no labels) kept."""
    from drawkit.visualize import visualize_attention

    def trace():
        result = visualize_attention(checkpoint, out=tmp / "attention.gif", n=TRACED, seed=seed, device=device,
                                     scale=SCALE)
        return [Picture(tmp / "attention.gif", f"{caption} ({TRACED} test images)")], \
            [result["note"]] if result["note"] else []

    return trace


def newest_evaluations(run: Path) -> dict:
    """split -> the newest recorded result for it, in SPLITS order."""
    newest = {record.get("split"): record for record in read_evaluations(run)}
    return {split: newest[split] for split in SPLITS if split in newest}


def evaluations_section(run: Path) -> str:
    """The newest `drawkit evaluate` result per split, or how to get one."""
    newest = newest_evaluations(run)
    if not newest:
        return section("Evaluation", note(f"no evaluation recorded yet; 'drawkit evaluate --checkpoint {run}' "
                                          f"records one in {EVALUATIONS}"))
    measures = [key for key in MEASURES if any(key in record for record in newest.values())]
    headings = ["split", "images", "step", "checkpoint", *(esc(MEASURES[key][0]) for key in measures), "evaluated"]
    rows = [[esc(split), esc(record.get("n_images", "")), esc(record.get("step", "")),
             f"<code>{esc(record.get('checkpoint', ''))}</code>",
             *(esc(MEASURES[key][1].format(record[key])) if key in record else "" for key in measures),
             esc(record.get("evaluated_at", ""))]
            for split, record in newest.items()]
    warnings = "".join(note(f"{split}: {record['warning']}") for split, record in newest.items()
                       if record.get("warning"))
    return section("Evaluation", table(headings, rows) + warnings)
