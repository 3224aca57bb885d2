"""The loss-curve picture: train and validation bound (nats/image) per step, from a run's metrics.jsonl.

A classifier's run (records with ``error_rate``, no ``nll_bound``) gets two panels instead: the
training cross-entropy per logged step, and the validation error rate (%) per validation, beside
the training batches' error rate; each axis is logarithmic when its values span more than tenfold.

matplotlib is an optional extra (``pip install 'drawkit[plot]'``); it is imported only here, and
drawn through its Agg canvas so no window or global backend is involved.
"""
import json
from pathlib import Path
from typing import Optional

from rich.markup import escape

from drawkit.errors import DrawkitError
from drawkit.outputs import atomic_write, output_path
from drawkit.progress import stderr

METRICS = "metrics.jsonl"
CURVES = "curves.png"
HINT = "loss curves need matplotlib: pip install 'drawkit[plot]'"


class PlottingUnavailable(DrawkitError):
    """matplotlib is not installed."""


def read_metrics(path: Path) -> list[dict]:
    """The records of the latest run in ``path``.

    A record at a lower step than the one before starts either a new run in the same folder (start_step 0:
    the earlier records go) or a resume from a checkpoint older than the last record, as after a kill
    (start_step > 0: only the records past that checkpoint go, as the resumed run does those steps again).
    """
    if not path.is_file():
        raise DrawkitError(f"{path} not found; pass --run a folder written by 'drawkit train --out DIR'")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise DrawkitError(f"{path} line {number} is not JSON; was it written by 'drawkit train'?") from None
        if records and record.get("step", 0) < records[-1].get("step", 0):
            resumed_from = record.get("start_step") or 0
            records = [r for r in records if r.get("step", 0) <= resumed_from] if resumed_from else []
        records.append(record)
    return records


def _matplotlib():
    """(matplotlib, its Agg canvas, its Figure); the one-line hint when the [plot] extra is missing."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlottingUnavailable(HINT) from None
    return matplotlib, FigureCanvasAgg, Figure


def _series(records: list[dict], split: str, key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r and "step" in r]
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(run, out: Optional[str] = None) -> Path:
    """Write RUN/curves.png (or ``out``): train bound per logged step, validation bound per epoch; for a
    classifier's run the training cross-entropy and the error rates."""
    matplotlib, FigureCanvasAgg, Figure = _matplotlib()
    run = Path(run).expanduser()
    if not run.is_dir():
        raise DrawkitError(f"--run {run} is not a folder; pass the --out folder of 'drawkit train'")
    records = read_metrics(run / METRICS)
    if is_classification(records):
        return _plot_classification(run, records, out)
    train_steps, train_bound = _series(records, "train", "loss")
    valid_steps, valid_bound = _series(records, "valid", "nll_bound")
    if not train_steps and not valid_steps:
        raise DrawkitError(f"{run / METRICS} has no train or validation records yet; train longer, then plot")
    out = output_path(out or run / CURVES, "--out")

    with matplotlib.rc_context({"font.size": 9}):
        figure = Figure(figsize=(6, 3.6), dpi=120, layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        if train_steps:
            ax.plot(train_steps, train_bound, color="#0072B2", linewidth=1.2, label="train (batch)")
        if valid_steps:
            ax.plot(valid_steps, valid_bound, color="#D55E00", marker="o", markersize=4, linewidth=1.5,
                    label=f"validation (last {valid_bound[-1]:.2f})")
        ax.set_xlabel("step")
        ax.set_ylabel("bound on -log p(x), nats/image")
        ax.set_title(f"{run.name}: -log p(x) bound (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend()
        _zoom_past_start(ax, train_bound + valid_bound)
        with atomic_write(out) as tmp:
            figure.savefig(tmp, format="png")
    return out


#: what ``plot_comparison`` draws per kind of run: (metric key, scale, axis label, title)
COMPARED = {"bound": ("nll_bound", 1, "validation bound, nats/image", "validation bound against wall time"),
            "error": ("error_rate", 100, "validation error, %", "validation error against wall time")}


def training_time(records: list[dict]) -> list[tuple[float, dict]]:
    """(training seconds since the run began, record) for each record that has a time_s.

    time_s counts from the start of its process, so each earlier process's last time_s is added to
    the records after it. A record starts a new process (--resume) when its start_step differs
    from the record before's or its time_s is lower (a second resume from the same checkpoint).
    """
    timed, before, last, process = [], 0.0, 0.0, None
    for record in records:
        if "time_s" not in record:
            continue
        started = record.get("start_step")
        if timed and (started != process or record["time_s"] < last):
            before += last
        last, process = record["time_s"], started
        timed.append((before + last, record))
    return timed


def compared_series(runs: list) -> tuple[str, dict]:
    """("bound" or "error", run name -> (minutes, values)): each run's validation measure against wall time,
    error rates in %; runs of both kinds are refused, as one axis cannot show both."""
    series, kinds = {}, {}
    for run in map(lambda r: Path(r).expanduser(), runs):
        records = read_metrics(run / METRICS)
        kinds[run.name] = kind = "error" if is_classification(records) else "bound"
        key, scale = COMPARED[kind][:2]
        points = [(seconds, r) for seconds, r in training_time(records) if r.get("split") == "valid" and key in r]
        if not points:
            raise DrawkitError(f"{run / METRICS} has no validation {'error rate' if kind == 'error' else 'bound'} "
                               f"yet; train longer, then plot")
        series[run.name] = ([seconds / 60 for seconds, _ in points], [scale * r[key] for _, r in points])
    if len(set(kinds.values())) > 1:
        classifiers = ", ".join(name for name, kind in kinds.items() if kind == "error")
        raise DrawkitError(f"{classifiers} measure an error rate and the other runs a bound, which one axis cannot "
                           f"show; plot classifiers and DRAW models separately")
    return next(iter(kinds.values())), series


def plot_comparison(runs: list, out: str) -> Path:
    """Several runs' validation bounds (classifiers: error rates) against wall time, in one picture: which
    model is ahead for the same time, whatever their steps cost (``drawkit plot --run A --run B``)."""
    matplotlib, FigureCanvasAgg, Figure = _matplotlib()
    kind, series = compared_series(runs)
    _, _, ylabel, title = COMPARED[kind]
    out = output_path(out, "--out")
    with matplotlib.rc_context({"font.size": 9}):
        figure = Figure(figsize=(6, 3.6), dpi=120, layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        for name, (minutes, values) in series.items():
            ax.plot(minutes, values, marker="o", markersize=3, linewidth=1.5, label=f"{name} (last {values[-1]:.2f})")
        ax.set_xlabel("wall time, minutes")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend()
        _zoom_past_start(ax, [v for _, values in series.values() for v in values])
        with atomic_write(out) as tmp:
            figure.savefig(tmp, format="png")
    return out


def is_classification(records: list[dict]) -> bool:
    """A classifier's run: its records measure an error rate, and none a bound."""
    return any("error_rate" in r for r in records) and not any("nll_bound" in r for r in records)


def _fitting_scale(ax, values: list[float]) -> None:
    """A log axis when every value is positive and they span more than tenfold, else linear."""
    if values and min(values) > 0 and max(values) > 10 * min(values):
        ax.set_yscale("log")


def _plot_classification(run: Path, records: list[dict], out: Optional[str]) -> Path:
    """Training cross-entropy (left) and error rates in % (right) per step."""
    import matplotlib  # plot_curves has checked it is installed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train_steps, train_loss = _series(records, "train", "loss")
    error_steps, train_error = _series(records, "train", "error_rate")
    valid_steps, valid_error = _series(records, "valid", "error_rate")
    if not train_steps and not valid_steps:
        raise DrawkitError(f"{run / METRICS} has no train or validation records yet; train longer, then plot")
    out = output_path(out or run / CURVES, "--out")
    train_error, valid_error = [100 * e for e in train_error], [100 * e for e in valid_error]

    with matplotlib.rc_context({"font.size": 9}):
        figure = Figure(figsize=(6, 3.6), dpi=120, layout="constrained")
        FigureCanvasAgg(figure)
        loss_ax, error_ax = figure.subplots(1, 2)
        if train_steps:
            loss_ax.plot(train_steps, train_loss, color="#0072B2", linewidth=1.2, label="train (batch)")
            loss_ax.legend()
        loss_ax.set_xlabel("step")
        loss_ax.set_ylabel("cross-entropy, nats/image")
        loss_ax.set_title("training cross-entropy")
        _fitting_scale(loss_ax, train_loss)
        if error_steps:
            error_ax.plot(error_steps, train_error, color="#0072B2", linewidth=1, alpha=0.6, label="train (batch)")
        if valid_steps:
            error_ax.plot(valid_steps, valid_error, color="#D55E00", marker="o", markersize=4, linewidth=1.5,
                          label=f"validation (last {valid_error[-1]:.2f}%)")
        error_ax.set_xlabel("step")
        error_ax.set_ylabel("error rate, %")
        error_ax.set_title("error rate (lower is better)")
        _fitting_scale(error_ax, train_error + valid_error)
        if error_steps or valid_steps:
            error_ax.legend()
        for ax in (loss_ax, error_ax):
            ax.grid(alpha=0.3, which="both")
        figure.suptitle(f"{run.name}: classification")
        with atomic_write(out) as tmp:
            figure.savefig(tmp, format="png")
    return out


def _zoom_past_start(ax, values: list[float]) -> None:
    """The first steps' losses are many times the final ones; cap the y axis so the end stays readable."""
    if len(values) > 4:
        ordered = sorted(values)
        low, high = ordered[0], ordered[int(0.9 * (len(ordered) - 1))]
        if ordered[-1] > high + 2 * (high - low):
            ax.set_ylim(low - 0.05 * (high - low), high + 0.5 * (high - low))


def curves_after_training(run) -> Optional[Path]:
    """What ``drawkit train`` calls at the end: the picture if it can be drawn, else a one-line hint."""
    try:
        path = plot_curves(run)
    except DrawkitError as exc:
        stderr.print(f"[yellow]Note:[/] no {CURVES}: {escape(str(exc))}", highlight=False, soft_wrap=True)
        return None
    except Exception as exc:  # a picture must never fail a finished training run
        stderr.print(f"[yellow]Note:[/] no {CURVES}: plotting failed ({type(exc).__name__}: {escape(str(exc))})",
                     highlight=False, soft_wrap=True)
        return None
    stderr.print(f"loss curves: {escape(str(path))}", highlight=False, soft_wrap=True)
    return path
