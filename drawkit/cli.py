"""The ``drawkit`` command: thin Typer wrappers over plain functions, errors as one line."""
import json
import os
import shlex
import sys
from typing import Annotated, Callable, NamedTuple, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drawkit import __version__
from drawkit.errors import DrawkitError
from drawkit.options import dataset_options, parse_options
from drawkit.plugins import load_plugins, pm
from drawkit.progress import stderr

# The Click exception base, found through Typer so both vendored and plain Click work.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def error_line(message: str) -> None:
    stderr.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def debugging() -> bool:
    return os.environ.get("DRAWKIT_DEBUG", "").lower() in ("1", "true", "yes")


class OneLineErrors(typer.core.TyperGroup):
    """Every error ends as one line on stderr: exit 2 for what the user can fix, 1 for a crash.

    ``drawkit --debug ...`` (or DRAWKIT_DEBUG=1) shows the traceback instead, for bug reports.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except _ClickException as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) else ""
            error_line(exc.format_message().replace("\n", " ") + hint)
            code = 2
        except DrawkitError as exc:
            error_line(str(exc))
            code = 2
        except Exception as exc:
            if debugging():
                raise
            code = _report_crash(exc)
        if standalone_mode:
            sys.exit(code)
        return code


def _report_crash(exc: Exception) -> int:
    """Out of memory and disk trouble are the user's to fix (2); anything else is a bug (1)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        error_line("the GPU ran out of memory; use a smaller --batch-size (or --device cpu)")
        return 2
    if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
        error_line(f"torch.compile failed ({type(exc).__name__}); run again with --no-compile (train's default "
                   f"when --compile is left out)")
        return 2
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        error_line(f"{exc.strerror or exc}{where}; check the path, its permissions and the free disk space")
        return 2
    message = " ".join(str(exc).split())
    error_line(f"drawkit failed: {type(exc).__name__}: {message} (run 'drawkit --debug ...' for the traceback)")
    return 1


class ConfigField(NamedTuple):
    """Where one `drawkit train` option lands: a field of DrawConfig ("model") or TrainConfig ("train")."""

    config: str
    field: str
    convert: Optional[Callable[[dict], object]] = None  # from all the option values; None: the option's own value


def _dataset_options(values: dict) -> dict:
    return dataset_options(values["dataset_opt"], values["image_size"], values["grayscale"])


#: every `drawkit train` option that is part of what is trained -> its config field; presets may set these
TRAIN_OPTIONS = {
    "preset": ConfigField("train", "preset"),  # the name alone, for the record; its options are applied before
    "task": ConfigField("train", "task"),
    "dataset": ConfigField("train", "dataset"),
    "dataset_opt": ConfigField("train", "dataset_options", _dataset_options),
    "image_size": ConfigField("train", "dataset_options", _dataset_options),
    "grayscale": ConfigField("train", "dataset_options", _dataset_options),
    "encoder": ConfigField("model", "encoder"),
    "attention": ConfigField("model", "attention"),
    "glimpses": ConfigField("model", "glimpses"),
    "hidden": ConfigField("model", "hidden"),
    "z_dim": ConfigField("model", "z_dim"),
    "read_size": ConfigField("model", "read_size"),
    "write_size": ConfigField("model", "write_size"),
    "encoder_opt": ConfigField("model", "encoder_options",
                               lambda values: parse_options(values["encoder_opt"], "--encoder-opt")),
    "canvas_start": ConfigField("model", "canvas_start"),
    "attention_opt": ConfigField("model", "attention_options",
                                 lambda values: parse_options(values["attention_opt"], "--attention-opt")),
    "likelihood": ConfigField("model", "likelihood"),
    "binarize": ConfigField("train", "binarize"),
    "batch_size": ConfigField("train", "batch_size"),
    "epochs": ConfigField("train", "epochs"),
    "max_steps": ConfigField("train", "max_steps"),
    "lr": ConfigField("train", "lr"),
    "lr_decay": ConfigField("train", "lr_decay"),
    "lr_schedule": ConfigField("train", "lr_schedule"),
    "lr_restarts": ConfigField("train", "lr_restarts"),
    "clip": ConfigField("train", "clip"),
    "adam_beta1": ConfigField("train", "adam_beta1"),
    "kl_warmup": ConfigField("train", "kl_warmup"),
    "seed": ConfigField("train", "seed"),
    "device": ConfigField("train", "device"),
    "data_dir": ConfigField("train", "data_dir"),
    "out": ConfigField("train", "out"),
    "log_every": ConfigField("train", "log_every"),
    "val_images": ConfigField("train", "val_images"),
    "keep": ConfigField("train", "keep"),
    "compile": ConfigField("train", "compile"),
    "compile_mode": ConfigField("train", "compile_mode"),
    "time_limit": ConfigField("train", "time_limit"),
    "precision": ConfigField("train", "precision"),
    "tf32": ConfigField("train", "tf32"),
    "tensorboard": ConfigField("train", "tensorboard"),
}
#: `drawkit train` options that say how the command runs, not what is trained: in no config, set by no preset
RUN_OPTIONS = ("progress", "resume", "distributed")
#: what a preset may set: every option that reaches a config, except the preset's own name
PRESETTABLE = tuple(name for name in TRAIN_OPTIONS if name != "preset")


def preset_values(name: str) -> dict:
    """The options preset ``name`` sets; a key that would reach no config is a mistake in PRESETS, refused."""
    from drawkit.presets import preset_options

    options = preset_options(name)
    unknown = [key for key in options if key not in PRESETTABLE]
    if unknown:
        raise ValueError(f"preset '{name}' sets {', '.join(unknown)}, which reach no config; a preset may set: "
                         f"{', '.join(PRESETTABLE)}")
    return options


def train_configs(values: dict):
    """(DrawConfig, TrainConfig) from the value of every `drawkit train` option in TRAIN_OPTIONS.

    The DrawConfig holds the model options; training turns it into the config of the kind of model
    ``TrainConfig.task`` names (drawkit/tasks.py).
    """
    from drawkit.model import DrawConfig
    from drawkit.training import TrainConfig

    fields = {"model": {}, "train": {}}
    for option, (config, field, convert) in TRAIN_OPTIONS.items():
        if field not in fields[config]:  # dataset_options: three options build it together, once
            fields[config][field] = convert(values) if convert else values[option]
    return DrawConfig(**fields["model"]), TrainConfig(**fields["train"])


def _registered(kind: str) -> Callable[[str], list[tuple[str, str]]]:
    """Shell completion of an option naming a registered ``kind``: the names installed now, with descriptions."""

    def complete(incomplete: str) -> list[tuple[str, str]]:
        from drawkit.registry import get_registry

        return [(reg.name, reg.description) for reg in get_registry().all()
                if reg.kind == kind and reg.name.startswith(incomplete)]

    return complete


complete_encoder, complete_attention, complete_dataset = (_registered(k) for k in ("encoder", "attention", "dataset"))


def complete_preset(incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of --preset: the preset names, with what each one is."""
    from drawkit.presets import PRESETS

    return [(name, what) for name, (what, _) in PRESETS.items() if name.startswith(incomplete)]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"drawkit {__version__}")
        raise typer.Exit()


app = typer.Typer(cls=OneLineErrors, rich_markup_mode="rich", no_args_is_help=True, add_completion=True,
                  help="DRAW and DCRW image generation (and DRAW's attention classifier), built from plugins.")


@app.callback()
def _startup(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (for bug reports).")] = False,
             version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                                   help="Print drawkit's version and exit.")] = False) -> None:
    """Report plugins that failed to load, clashed or are wired wrong, once, before any command runs."""
    from drawkit.registry import get_registry

    if debug:
        os.environ["DRAWKIT_DEBUG"] = "1"

    for problem in get_registry(cli=app).problems:
        stderr.print(f"[yellow]Warning:[/] {problem}", highlight=False, soft_wrap=True)


def _explicit(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave this option (a preset must not override it)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


@app.command()
def train(
    ctx: typer.Context,
    preset: Annotated[Optional[str], typer.Option(help="Named settings, e.g. paper-mnist (see 'drawkit presets'); flags given win.", autocompletion=complete_preset)] = None,
    task: Annotated[str, typer.Option(help="generate: DRAW, a model that draws | classify: glimpses through the same attention and encoder, then a linear layer over the data set's classes (the paper's section 4.1).")] = "generate",
    dataset: Annotated[str, typer.Option(help="Registered dataset (see 'drawkit plugins').", autocompletion=complete_dataset)] = "mnist",
    dataset_opt: Annotated[Optional[list[str]], typer.Option(help="Dataset option KEY=VALUE (repeatable).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Same as --dataset-opt image_size=N (image-folder).")] = None,
    grayscale: Annotated[Optional[bool], typer.Option("--grayscale", help="Same as --dataset-opt grayscale=true (image-folder).")] = None,
    encoder: Annotated[str, typer.Option(help="Registered encoder: lstm (DRAW), cnn (DCRW), ...", autocompletion=complete_encoder)] = "lstm",
    attention: Annotated[str, typer.Option(help="Registered attention: filterbank, none, ...", autocompletion=complete_attention)] = "filterbank",
    glimpses: Annotated[int, typer.Option(help="T, read/write steps per image.")] = 64,
    hidden: Annotated[int, typer.Option(help="LSTM units.")] = 256,
    z_dim: Annotated[int, typer.Option(help="Latent size per glimpse.")] = 100,
    read_size: Annotated[Optional[int], typer.Option(help="N of the N x N read window (default: the plugins' choice, else 2).")] = None,
    write_size: Annotated[Optional[int], typer.Option(help="N of the N x N write window (default: the plugins' choice, else 5).")] = None,
    encoder_opt: Annotated[Optional[list[str]], typer.Option(help="Encoder option KEY=VALUE (repeatable).")] = None,
    attention_opt: Annotated[Optional[list[str]], typer.Option(help="Attention option KEY=VALUE (repeatable).")] = None,
    likelihood: Annotated[Optional[str], typer.Option(help="bernoulli | logistic (default: the dataset's).")] = None,
    canvas_start: Annotated[str, typer.Option(help="zero | learned: c_0 is zeros, or a learned bias (the paper's section 2) started at the training images' mean, so small reads refine the mean image instead of painting it from grey.")] = "zero",
    binarize: Annotated[Optional[str], typer.Option(help="sample | threshold | none (default: the dataset's; none with --task classify).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per step; with several processes split evenly across them.")] = 100,
    epochs: Annotated[int, typer.Option(help="Passes over the training set.")] = 10,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps.")] = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    lr_decay: Annotated[float, typer.Option(help="Multiply the learning rate by this after each epoch (1: constant); may change on resume.")] = 1.0,
    lr_schedule: Annotated[str, typer.Option(help="decay (by --lr-decay each epoch) | cosine (from --lr down to 0 along half a cosine over the run's --epochs or --max-steps); may change on resume, and a resume with more --epochs stretches the cosine, so the rate rises at once (a warm restart).")] = "decay",
    lr_restarts: Annotated[Optional[str], typer.Option(help="With --lr-schedule cosine: epochs, e.g. 180,340, where a cosine ends and the rate rises to the cosine over the next one (or over the run), as a resume with more --epochs does (none: no restarts). May change on resume.")] = None,
    clip: Annotated[float, typer.Option(help="Gradient norm clipping.")] = 10.0,
    adam_beta1: Annotated[float, typer.Option(help="Adam's beta1, the decay of its gradient average.")] = 0.9,
    kl_warmup: Annotated[int, typer.Option(help="DRAW: raise the KL's weight in the training objective from 0 to 1 over this many steps (0: off); metrics and validation report the full bound.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    data_dir: Annotated[Optional[str], typer.Option(help="Data root (else $DRAWKIT_DATA, else ~/.cache/drawkit).")] = None,
    out: Annotated[str, typer.Option(help="Run folder: checkpoint.pt and metrics.jsonl go here.")] = "runs/draw",
    log_every: Annotated[int, typer.Option(help="Steps between metrics lines.")] = 50,
    val_images: Annotated[Optional[int], typer.Option(help="Validate on this many images (default: all).")] = None,
    keep: Annotated[int, typer.Option(help="How many checkpoint-<step>.pt to keep besides checkpoint.pt and best.pt.")] = 3,
    resume: Annotated[Optional[str], typer.Option(help="Continue the run in this folder from its last checkpoint. The command that started the run may be given again with --resume added: options equal to the run's are accepted; a change to one that cannot change is refused, naming those that can.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="Compile runs of 8 glimpses with torch.compile: faster steps, the same mathematics; under a minute to compile on a 2-core CPU.")] = False,
    compile_mode: Annotated[str, typer.Option(help="With --compile: default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs.")] = "default",
    tensorboard: Annotated[bool, typer.Option("--tensorboard/--no-tensorboard", help="Also write OUT/tensorboard/ for 'tensorboard --logdir OUT': the metrics every --log-every steps, and after each validation its measures with samples and reconstructions. Needs pip install 'drawkit\\[tensorboard]'; may be turned on or off on resume.")] = False,
    precision: Annotated[str, typer.Option(help="fp32 | bf16: bf16 runs the matrix products and LSTM gates in bfloat16 (autocast; about 2x the speed on CPUs with AVX512-BF16 and on GPUs); parameters, the canvas sum, likelihood, KL and loss stay float32. May change on resume.")] = "fp32",
    tf32: Annotated[bool, typer.Option("--tf32/--no-tf32", help="CUDA: TF32 for float32 matrix products (on by default; --no-tf32 for full float32).")] = True,
    time_limit: Annotated[Optional[str], typer.Option(help="Stop cleanly at the first step after this wall time (1h30m, 90m, 5400s), save, print the command that resumes and exit 0; a resumed run gets the same limit again unless given another (none: no limit).")] = None,
    distributed: Annotated[bool, typer.Option("--distributed", help="Join the processes torchrun started (automatic when it started several): 'torchrun --nproc_per_node=N -m drawkit train ...'.")] = False,
) -> None:
    """Train DRAW (or, with --task classify, a classifier) on a dataset; writes OUT/checkpoint.pt and OUT/metrics.jsonl."""
    model_config, config, payload = chosen_configs(ctx)
    _run_training(model_config, config, progress, payload, distributed)


def chosen_configs(ctx: typer.Context) -> tuple[object, object, Optional[dict]]:
    """What `drawkit train` (and ``drawkit.train()``, drawkit/api.py) trains, from the options in ``ctx``.

    Returns (model config, TrainConfig, the checkpoint payload to resume from, or None). A fresh run: every
    option given, else the preset's value, else its default. With --resume: the run's configs (``_resumed``).
    """
    if ctx.params.get("resume"):
        return _resumed(ctx, ctx.params["resume"])
    values = dict(ctx.params)  # every option: given, else its default; a preset's value wins over a default only
    if values.get("preset"):
        values.update({k: v for k, v in preset_values(values["preset"]).items() if not _explicit(ctx, k)})
    return (*train_configs(values), None)


#: what may change when resuming; everything else comes from the checkpoint
CHANGEABLE = ("epochs", "max_steps", "device", "data_dir", "log_every", "keep", "compile", "compile_mode",
              "lr_decay", "lr_schedule", "lr_restarts", "time_limit", "tensorboard", "precision", "tf32")
RESUMABLE = CHANGEABLE + ("progress", "resume", "distributed")  # and how the command runs


def _resumed(ctx: typer.Context, run_dir: str) -> tuple[object, object, dict]:
    """Continue a run: the options that match it are accepted, CHANGEABLE ones applied, any other change refused.

    So the command that started the run, with --resume added, resumes it (a --preset again too: its
    values count as if typed).
    """
    from dataclasses import replace
    from pathlib import Path

    from drawkit.training import resume_configs

    model_config, config, payload = resume_configs(run_dir)
    folder = Path(run_dir).expanduser()
    out = run_dir if folder.is_dir() else str(folder.parent)  # --resume RUN or RUN/checkpoint.pt
    given = _resume_options(ctx)
    for name, (value, source) in given.items():
        if name not in RESUMABLE and name != "preset":  # a preset's name is only the record; its values count
            _same_as_run(ctx, name, value, source, model_config, config, Path(out))
    changes = {TRAIN_OPTIONS[name].field: value for name, (value, _) in given.items() if name in CHANGEABLE}
    return model_config, replace(config, out=out, **changes), payload


def _resume_options(ctx: typer.Context) -> dict:
    """option -> (value, where it came from): each option given, then a --preset's for those not given."""
    given = {name: (value, "") for name, value in ctx.params.items() if _explicit(ctx, name)}
    preset = ctx.params.get("preset")
    if preset:
        for name, value in preset_values(preset).items():
            given.setdefault(name, (value, f" (from --preset {preset})"))
    return given


_NOT_IN_RUN = object()  # a config field the run's kind of model does not have


def _same_as_run(ctx: typer.Context, name: str, value, source: str, model_config, config, out) -> None:
    """Refuse, in one line naming the option, the run's value and the new one, an option that changes the run.

    An option is compared with the config field it sets (TRAIN_OPTIONS): --dataset-opt, --image-size and
    --grayscale key by key with the run's dataset options, --encoder-opt and --attention-opt with its
    encoder and attention options, --out with the run folder.
    """
    from pathlib import Path

    if name == "out":
        if Path(value).expanduser().resolve() != out.resolve():
            _refuse("--out", out, value, source)
        return
    keyed = {"dataset_opt": lambda: (config.dataset_options, parse_options(value, "--dataset-opt")),
             "image_size": lambda: (config.dataset_options, {"image_size": value}),
             "grayscale": lambda: (config.dataset_options, {"grayscale": True} if value else {}),
             "encoder_opt": lambda: (model_config.encoder_options, parse_options(value, "--encoder-opt")),
             "attention_opt": lambda: (model_config.attention_options, parse_options(value, "--attention-opt"))}
    if name in keyed:
        stored, options = keyed[name]()
        for key, new in options.items():
            label = f"--{name.replace('_', '-')} {key}" if name.endswith("_opt") else f"--{name.replace('_', '-')}"
            if (stored or {}).get(key, _NOT_IN_RUN) != new:
                _refuse(label, (stored or {}).get(key), new, source)
        return
    where, field, _ = TRAIN_OPTIONS[name]
    stored = getattr(model_config if where == "model" else config, field, _NOT_IN_RUN)
    flag = f"--{name.replace('_', '-')}"
    if stored is _NOT_IN_RUN:  # a generation option on a classifier's run: only its "not set" value fits
        default = next(p.default for p in ctx.command.params if p.name == name)
        if value != default:
            raise DrawkitError(f"{flag} cannot change when resuming: this run (--task {config.task}) has no "
                               f"{flag}, and the command gives {_shown(value)}{source}; leave it out")
        return
    if stored != value:
        _refuse(flag, stored, value, source)


def _shown(value) -> str:
    if value is None:
        return "unset"
    return json.dumps(value) if isinstance(value, (dict, list, tuple)) else str(value)


def _refuse(flag: str, stored, new, source: str) -> None:
    raise DrawkitError(f"{flag} cannot change when resuming: it is {_shown(stored)} in this run, not "
                       f"{_shown(new)}{source}; only {', '.join('--' + n.replace('_', '-') for n in CHANGEABLE)} can")


def _run_training(model_config, config, progress: bool, resume: dict = None, distributed: bool = False) -> None:
    from drawkit import distributed as processes
    from drawkit.interrupts import exit_at_once_on_another_signal
    from drawkit.tasks import task_named
    from drawkit.training import Interrupted
    from drawkit.training import train as run_training

    with processes.session(distributed, config.device):
        main = processes.is_main()  # with several processes, rank 0 alone reports
        try:
            result = run_training(model_config, config, progress=progress, resume=resume)
        except Interrupted as exc:
            if _command_line:
                exit_at_once_on_another_signal()
            if main:
                next_step = (f"continue with 'drawkit train --resume {escape(str(config.out))}'" if exc.resumable
                             else "run the same command to start again")
                stderr.print(f"Interrupted: {escape(exc.what)}; {next_step}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code)
    if not main:
        return
    if result["time_up"]:
        typer.echo(f"time limit {config.time_limit} reached after step {result['steps']}: checkpoint saved to "
                   f"{result['checkpoint']}; continue with: drawkit train --resume {shlex.quote(str(config.out))}")
        return
    validation = task_named(config.task).summary(result)
    skipped = f"; skipped {result['skipped_steps']} non-finite steps" if result["skipped_steps"] else ""
    typer.echo(f"trained {result['steps']} steps on {result['device']}{validation}{skipped}; "
               f"checkpoint {result['checkpoint']}")


@app.command()
def presets() -> None:
    """List the named training settings for --preset."""
    from drawkit.presets import PRESETS

    table = Table(title="drawkit presets")
    for column in ("name", "what", "options"):
        table.add_column(column)
    for name, (what, options) in PRESETS.items():
        flags = [f"--{k.replace('_', '-')} {value}" for k, v in options.items()
                 for value in (v if isinstance(v, list) else [v])]  # a repeatable option: once per value
        table.add_row(name, escape(what), escape(" ".join(flags)))
    Console(soft_wrap=False, width=max(Console().width, 120)).print(table)


@app.command()
def evaluate(
    checkpoint: Annotated[str, typer.Option(help="checkpoint.pt, its run folder, or a folder written by 'drawkit export'.")],
    split: Annotated[str, typer.Option(help="test | valid | train")] = "test",
    importance_samples: Annotated[int, typer.Option(help="K > 1 adds the importance-weighted bound (Burda et al.).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 100,
    max_images: Annotated[Optional[int], typer.Option(help="Only the first N images of the split.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    data_dir: Annotated[Optional[str], typer.Option(help="Data root (else the run's, $DRAWKIT_DATA, ...).")] = None,
    precision: Annotated[str, typer.Option(help="fp32 | bf16: the forward passes' number format (the figures are float32 unless bf16 is asked for; --json says which).")] = "fp32",
    tf32: Annotated[bool, typer.Option("--tf32/--no-tf32", help="CUDA: allow TF32 in float32 matrix products (off: exact float32).")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """The test-set NLL bound (and importance-weighted bound) of a checkpoint, in nats/image and bits/dim; a
    classifier's error rate, accuracy and cross-entropy. A checkpoint in a run folder also gets the result appended
    to RUN/evaluations.jsonl (shown by 'drawkit report')."""
    from drawkit.evaluate import evaluation, record_evaluation

    result, line = evaluation(checkpoint, split=split, importance_samples=importance_samples, batch_size=batch_size,
                              max_images=max_images, device=device, data_dir=data_dir, progress=progress,
                              precision=precision, tf32=tf32)
    record_evaluation(checkpoint, result)  # RUN/evaluations.jsonl, for `drawkit report`
    typer.echo(json.dumps(result) if json_output else line)


@app.command()
def bench(
    preset: Annotated[Optional[str], typer.Option(help="Model settings to time (see 'drawkit presets'; default paper-mnist, paper-cluttered with --task classify).", autocompletion=complete_preset)] = None,
    task: Annotated[Optional[str], typer.Option(help="generate | classify (default: the preset's, else generate); classify times steps on random labels.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    steps: Annotated[int, typer.Option(help="Timed training steps.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed steps first (they also pay for compiling).")] = 3,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step (default: the preset's).")] = None,
    glimpses: Annotated[Optional[int], typer.Option(help="T (default: the preset's).")] = None,
    hidden: Annotated[Optional[int], typer.Option(help="LSTM units (default: the preset's).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Side of the square synthetic images (default: the preset's data set's, e.g. 28 for MNIST, 100 for cluttered MNIST).")] = None,
    compile: Annotated[bool, typer.Option(help="Time the compiled glimpse (as 'train --compile'), or the eager one.")] = True,
    reference: Annotated[Optional[str], typer.Option(help="Also time this plain DRAW script (e.g. ../shared/bench/refdraw.py) on the same model and report the speed-up.")] = None,
    rounds: Annotated[int, typer.Option(help="Time drawkit (and the reference) this many times in turn; report medians.")] = 1,
    glimpses_per_call: Annotated[int, typer.Option(help="Glimpses per compiled call (as 'train --compile').")] = 8,
    compile_mode: Annotated[str, typer.Option(help="default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs.")] = "default",
    precision: Annotated[str, typer.Option(help="fp32 | bf16 (bfloat16 autocast, as 'train --precision bf16'); a --reference runs float32.")] = "fp32",
    tf32: Annotated[bool, typer.Option("--tf32/--no-tf32", help="CUDA: TF32 for float32 matrix products, as in training (on by default).")] = True,
    utilisation: Annotated[bool, typer.Option("--utilisation/--no-utilisation", help="Also count the step's matrix products and time them alone: achieved over peak GFLOPS (a few seconds more).")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time full training steps (forward, backward, Adam) on synthetic binary images (and random labels with
    --task classify): images/s, s/step, memory."""
    from drawkit.bench import bench as run_bench

    with stderr.status(f"timing {warmup} warm-up{' (and compiling)' if compile else ''} and {rounds} x {steps} training steps"):
        result = run_bench(preset=preset, device=device, steps=steps, warmup=warmup, batch_size=batch_size,
                           glimpses=glimpses, hidden=hidden, image_size=image_size, compile=compile,
                           reference=reference, rounds=rounds, glimpses_per_call=glimpses_per_call,
                           compile_mode=compile_mode, task=task, precision=precision, tf32=tf32,
                           utilisation=utilisation)
    if json_output:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"drawkit bench: {result['preset']}, {'compiled' if compile else 'eager'}")
    table.add_column("measure")
    table.add_column("value")
    rows = {"images/s": f"{result['images_per_s']:.1f}", "s/step": f"{result['s_per_step']:.4f}",
            "peak memory": f"{result['peak_memory_mb']:.0f} MiB ({result['memory']})",
            "model": " ".join([f"{result['task']} T={result['glimpses']} hidden={result['hidden']}",
                               *(f"{short}={result[key]}" for short, key in
                                 (("z", "z_dim"), ("read", "read_size"), ("write", "write_size"))
                                 if result[key] is not None), f"{result['encoder']}/{result['attention']}"]),
            "batch, image": f"{result['batch_size']} x {result['image_size']}x{result['image_size']}",
            "device": f"{result['device']} ({result['device_name']})", "torch": result["torch"],
            "precision": result["precision"] + (" (TF32 products)" if result["tf32"] else ""),
            "warm-up": f"{warmup} steps, {result['warmup_s']:.1f} s"}
    if "percent_of_peak" in result:
        from drawkit.flops import describe

        rows["matrix products"] = describe(result)
    if compile:
        rows["compiled"] = f"{result['glimpses_per_call']} glimpses per call, mode {result['compile_mode']}"
    if rounds > 1:
        rows["rounds"] = f"{rounds}, medians shown"
    if reference:
        rows["reference"] = f"{result['reference']['images_per_s']:.1f} images/s ({reference})"
        rows["speed-up"] = f"{result['speedup']:.2f}x"
        if rounds > 1:
            rows["speed-up"] += " (rounds: " + ", ".join(f"{turn['speedup']:.2f}x" for turn in result["rounds"]) + ")"
    for name, value in rows.items():
        table.add_row(name, escape(str(value)))
    Console().print(table)


@app.command()
def sample(
    checkpoint: Annotated[str, typer.Option(help="checkpoint.pt, its run folder, or a folder written by 'drawkit export'.")],
    n: Annotated[int, typer.Option(help="How many images.")] = 64,
    out: Annotated[str, typer.Option(help="PNG grid to write.")] = "samples.png",
    gif: Annotated[Optional[str], typer.Option(help="Also write a GIF of the canvas over the T glimpses.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    scale: Annotated[int, typer.Option(help="Upscale factor (nearest neighbour).")] = 2,
    fps: Annotated[float, typer.Option(help="GIF frames per second.")] = 12,
    hold_last: Annotated[int, typer.Option(help="GIF: extra frames showing the finished images.")] = 12,
    loop: Annotated[int, typer.Option(help="GIF: how many times it plays; 0 = forever.")] = 0,
) -> None:
    """Generate images from a trained model."""
    from drawkit.sample import sample as run_sampling

    written = run_sampling(checkpoint, n=n, out=out, gif=gif, seed=seed, device=device, scale=scale, fps=fps,
                           hold_last=hold_last, loop=loop)
    typer.echo("wrote " + ", ".join(written.values()))


@app.command()
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print the same as one JSON object.")] = False,
) -> None:
    """List every registered encoder, attention and dataset, then each plugin with its hooks and what it registered."""
    from drawkit.registry import KINDS, get_registry

    registry = get_registry(cli=app)
    if as_json:
        typer.echo(json.dumps(registry.as_dict(), indent=2))
        return
    parts = Table(title="drawkit plugins")
    for column in ("kind", "name", "package", "plugin", "description"):
        parts.add_column(column)
    for reg in registry.all():
        package = f"{reg.package} {reg.version}".strip()
        parts.add_row(reg.kind, reg.name, package, reg.plugin, escape(reg.description))
    by_plugin = Table(title="by plugin (one per entry point)")
    for column in ("plugin", "package", "hooks", "registered", "status"):
        by_plugin.add_column(column)
    for key, info in registry.plugins.items():
        package = f"{info.package} {info.version}".strip()
        if info.broken:  # all its faults on one row
            parts.add_row("[red]broken[/]", info.name, package, info.name,
                          escape(registry.broken.get(key, info.problems[0])))
        registered = "\n".join(f"{kind}: {', '.join(info.registered[kind])}" for kind in KINDS
                                if info.registered[kind])
        warned = len(info.problems)  # a name of it that another plugin had taken
        status = ("[red]broken[/]" if info.broken else
                  f"[yellow]{warned} warning{'s' if warned > 1 else ''}[/]" if warned else "ok")
        by_plugin.add_row(info.name, package, "\n".join(info.hooks), escape(registered), status)
    console = Console(soft_wrap=False, width=max(Console().width, 120))
    console.print(parts)
    console.print(by_plugin)


@app.command()
def version() -> None:
    """Print drawkit's version."""
    typer.echo(f"drawkit {__version__}")


@app.command()
def reconstruct(
    checkpoint: Annotated[str, typer.Option(help="checkpoint.pt, its run folder, or a folder written by 'drawkit export'.")],
    n: Annotated[int, typer.Option(help="How many images (the first n of --split).")] = 16,
    out: Annotated[str, typer.Option(help="PNG to write.")] = "reconstructions.png",
    split: Annotated[str, typer.Option(help="test | train | valid")] = "test",
    indices: Annotated[Optional[str], typer.Option(help="Images of --split by number, e.g. 3,17,42.")] = None,
    image: Annotated[Optional[list[str]], typer.Option(help="A picture file of any size (repeatable).")] = None,
    invert: Annotated[bool, typer.Option(help="--image is dark on light: invert it.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (binarization and z).")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    scale: Annotated[int, typer.Option(help="Upscale factor (nearest neighbour).")] = 3,
    data_dir: Annotated[Optional[str], typer.Option(help="Data root (else the run's, $DRAWKIT_DATA, ...).")] = None,
) -> None:
    """Each input beside its reconstruction sigmoid(c_T)."""
    from drawkit.reconstruct import reconstruct as run_reconstruct

    result = run_reconstruct(checkpoint, n=n, out=out, split=split, indices=indices, images=image or (),
                             invert=invert, seed=seed, device=device, scale=scale, data_dir=data_dir)
    images = f"{result['images']} image{'s' if result['images'] != 1 else ''}"
    typer.echo(f"wrote {result['png']} ({images}, mean bound {result['bound']:.2f} nats/image)")


@app.command()
def visualize_attention(
    checkpoint: Annotated[str, typer.Option(help="checkpoint.pt, its run folder, or a folder written by 'drawkit export'.")],
    out: Annotated[str, typer.Option(help="GIF to write.")] = "attention.gif",
    n: Annotated[int, typer.Option(help="How many images (the first n of --split, or samples).")] = 16,
    split: Annotated[str, typer.Option(help="test | train | valid")] = "test",
    indices: Annotated[Optional[str], typer.Option(help="Images of --split by number, e.g. 3,17,42.")] = None,
    image: Annotated[Optional[list[str]], typer.Option(help="A picture file of any size (repeatable).")] = None,
    invert: Annotated[bool, typer.Option(help="--image is dark on light: invert it.")] = False,
    generate: Annotated[bool, typer.Option(help="Trace generation from the prior: write box only (DRAW checkpoints).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (binarization and z).")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    scale: Annotated[int, typer.Option(help="Upscale factor (nearest neighbour).")] = 3,
    fps: Annotated[float, typer.Option(help="Frames (glimpses) per second.")] = 12,
    loop: Annotated[int, typer.Option(help="How many times the GIF plays; 0 = forever.")] = 0,
    hold_last: Annotated[int, typer.Option(help="Extra frames showing the final canvas (a classifier: the final prediction and label).")] = 12,
    strip: Annotated[Optional[str], typer.Option(help="Also a PNG: every glimpse in one row, a row per input.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Data root (else the run's, $DRAWKIT_DATA, ...).")] = None,
) -> None:
    """GIF of DRAW reading (read box on the input) and writing (write box on the canvas), one frame per glimpse;
    for a classifier, the read box and the most likely class with its probability after each glimpse."""
    from drawkit.visualize import visualize_attention as run_visualize

    result = run_visualize(checkpoint, out=out, n=n, split=split, indices=indices, images=image or (),
                           invert=invert, generate=generate, seed=seed, device=device, scale=scale, fps=fps,
                           loop=loop, hold_last=hold_last, strip=strip, data_dir=data_dir)
    if result["note"]:
        stderr.print(f"[yellow]Note:[/] {escape(result['note'])}", highlight=False, soft_wrap=True)
    strip_note = f" and {result['strip']}" if "strip" in result else ""
    typer.echo(f"wrote {result['gif']} ({result['frames']} frames){strip_note}")


@app.command()
def plot(
    run: Annotated[list[str], typer.Option(help="Run folder (the --out of 'drawkit train'); given several times, their validation bounds (classifiers: error rates) against wall time in one picture.")],
    out: Annotated[Optional[str], typer.Option(help="PNG to write (default: RUN/curves.png; with several runs required).")] = None,
) -> None:
    """Loss curves: train and validation bound (nats/image) per step, from RUN/metrics.jsonl; for a classifier,
    the training cross-entropy and the error rates (%). Several --run: validation bounds (or error rates) against
    wall time."""
    from drawkit.curves import plot_comparison, plot_curves

    if len(run) > 1:
        if not out:
            raise DrawkitError("with several --run, give --out FILE.png for the comparison picture")
        typer.echo(f"wrote {plot_comparison(run, out)}")
        return
    typer.echo(f"wrote {plot_curves(run[0], out)}")


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run folder (its checkpoint.pt) or a checkpoint file such as RUN/best.pt.")],
    out: Annotated[str, typer.Option(help="Folder to write: model.safetensors, config.json, README.md (model card) and a picture.")],
    force: Annotated[bool, typer.Option("--force", help="Write into --out although it holds files: the export's files are replaced, the others kept.")] = False,
) -> None:
    """Write a run's model in the Hugging Face Hub's layout (safetensors weights, config.json, model card);
    every --checkpoint accepts the folder, loading it without pickle."""
    from drawkit.export import export as run_export

    result = run_export(run, out, force=force)
    if result["note"]:
        stderr.print(f"[yellow]Note:[/] {escape(result['note'])}", highlight=False, soft_wrap=True)
    typer.echo(f"wrote {result['out']} ({', '.join(result['files'])})")


@app.command()
def average(
    run: Annotated[str, typer.Argument(help="Run folder (the --out of 'drawkit train'), holding checkpoint-<step>.pt files.")],
    last: Annotated[int, typer.Option(help="How many of the newest checkpoint-<step>.pt to average (train with --keep K to keep K).")] = 3,
    out: Annotated[Optional[str], typer.Option(help="Checkpoint file to write (default: RUN/average.pt).")] = None,
) -> None:
    """Average the weights of a run's newest checkpoints into one checkpoint (weight averaging at the end of a
    schedule often generalises better); evaluate it with 'drawkit evaluate --checkpoint RUN/average.pt'."""
    from drawkit.average import average_checkpoints

    result = average_checkpoints(run, last, out)
    steps = result["steps"]
    typer.echo(f"wrote {result['out']} (the mean of {len(steps)} checkpoints, steps {steps[0]} to {steps[-1]})")


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="Run folder (the --out of 'drawkit train').")],
    out: Annotated[Optional[str], typer.Option(help="HTML file to write (default: RUN/report.html).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best | last: the pictures come from RUN/best.pt or RUN/checkpoint.pt.")] = "best",
    seed: Annotated[int, typer.Option(help="Random seed of the pictures.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """One self-contained HTML page about a run: its settings and plugins, curves, fresh samples, reconstructions
    and attention trace (a classifier: its glimpses), and the latest 'drawkit evaluate' results."""
    from drawkit.report import write_report

    result = write_report(run, out=out, checkpoint=checkpoint, seed=seed, device=device)
    for text in result.notes:
        stderr.print(f"[yellow]Note:[/] {escape(text)}", highlight=False, soft_wrap=True)
    typer.echo(f"wrote {result.html} (pictures from {result.checkpoint.name})")


load_plugins()
pm.hook.register_commands(cli=app)


_command_line = False  # True in the `drawkit` process itself, not when the app is called in-process


def main() -> None:
    global _command_line
    _command_line = True
    app()
