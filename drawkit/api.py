"""drawkit from Python: ``drawkit.load(path)`` and ``drawkit.train(**options)`` (docs/python.md).

A Model does what `drawkit sample`, `reconstruct`, `visualize-attention` and `evaluate` do, but hands
back tensors and dicts instead of writing files. Everything goes through the functions the commands
call (checkpoint.load_model, trace.py, evaluate.evaluation, cli.chosen_configs), so the two cannot
drift apart. Mistakes raise ``drawkit.DrawkitError`` with the same one line the command would print;
nothing here exits the interpreter.
"""
import difflib
from contextlib import nullcontext
from functools import cache
from typing import NamedTuple, Optional, Sequence, Union

import torch

from drawkit.checkpoint import load_model
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.evaluate import evaluation, record_evaluation
from drawkit.inputs import choose_labelled_inputs
from drawkit.registry import get_registry
from drawkit.rng import seeded
from drawkit.tasks import require_generative, task_of
from drawkit.trace import Trace, trace_classification, trace_generation, trace_reconstruction

Device = Union[str, torch.device, None]


class Model:
    """A trained model from a run folder, a checkpoint file or an exported folder (``drawkit.load``)."""

    def __init__(self, path, device: Device = None):
        self.path = str(path)  # as given: evaluate() reports it as `drawkit evaluate --checkpoint PATH` does
        self.device = resolve_device(None if device is None else str(device))
        self.module, self._payload = load_model(path, get_registry(), self.device)
        self._kind = task_of(self._payload.get("model_config"))

    def __repr__(self) -> str:
        return f"<drawkit.Model {self.task} {self.config.encoder}/{self.config.attention} from {self.path}>"

    @property
    def task(self) -> str:
        """What the model does: generate (DRAW) or classify (the paper's section 4.1 classifier)."""
        return self._kind.name

    @property
    def config(self):
        """The model's config: a DrawConfig, or a ClassifierConfig for a classifier (glimpses, hidden, ...)."""
        return self.module.config

    @property
    def plugins(self) -> dict:
        """kind -> {name, plugin, package, version}: the plugins that supplied the encoder, attention and data set."""
        return {kind: dict(record) for kind, record in (self._payload.get("plugins") or {}).items()}

    @property
    def train_config(self) -> dict:
        """How the model was trained (data set, batch size, seed, ...), as recorded in the checkpoint."""
        return dict(self._payload.get("train_config") or {})

    @torch.no_grad()
    def sample(self, n: int = 64, seed: Optional[int] = None) -> torch.Tensor:
        """``n`` images drawn from the prior, (n, C, H, W) in [0, 1] on the CPU; the same seed, the same images."""
        require_generative(self._kind, "sample")
        _check_count(n)
        with _seed(seed, self.device):
            return self.module.generate(n).cpu()

    def images(self, n: int = 16, split: str = "test", indices: Optional[Sequence[int]] = None,
               seed: int = 0) -> torch.Tensor:
        """Images of the data set the model was trained on, binarized as its training was: (B, C, H, W).

        The first ``n`` of ``split``, or those at ``indices``; the input `drawkit reconstruct` would use.
        """
        return self._inputs(n, split, indices, seed, labels=False)[0]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: Optional[int] = None) -> torch.Tensor:
        """sigmoid(c_T), the final canvas for each image: (B, C, H, W) in [0, 1] on the CPU.

        ``images``: (B, C, H, W) or one (C, H, W) in [0, 1], in the model's input form (``images()`` gives some).
        """
        require_generative(self._kind, "reconstruct")
        x = self._batch(images)
        with _seed(seed, self.device):
            return torch.sigmoid(self.module(x.to(self.device)).canvas).cpu()

    def trace(self, images: Optional[torch.Tensor] = None, n: int = 16, seed: Optional[int] = None) -> Trace:
        """The model at work glimpse by glimpse: what `drawkit visualize-attention` makes its GIFs from.

        DRAW: ``canvases`` (T, B, C, H, W) and the ``write`` boxes, and for ``images`` given the ``read``
        boxes too; without images it traces the generation of ``n`` images. A classifier: the ``read``
        boxes and ``probabilities`` (T, B, K) on ``images``, else on the first ``n`` test images (with
        their ``labels``).
        """
        if images is None and self._kind.generative:
            _check_count(n)
            with _seed(seed, self.device):
                return trace_generation(self.module, n)
        labels = None
        if images is None:
            images, labels = self._inputs(n, "test", None, 0, labels=True)
        x = self._batch(images)
        with _seed(seed, self.device):
            if self._kind.generative:
                return trace_reconstruction(self.module, x)
            return trace_classification(self.module, x, labels)

    def evaluate(self, split: str = "test", importance_samples: Optional[int] = None, batch_size: int = 100,
                 max_images: Optional[int] = None, data_dir: Optional[str] = None, progress: bool = False,
                 precision: str = "fp32", tf32: bool = False) -> dict:
        """The dict `drawkit evaluate --json` prints: the bound in nats/image and bits/dim (DRAW), or the error
        rate, accuracy and cross-entropy (a classifier). Recorded in the run folder as the command records it.
        """
        samples = 1 if importance_samples is None else importance_samples
        result, _ = evaluation(self.path, split=split, importance_samples=samples, batch_size=batch_size,
                               max_images=max_images, device=str(self.device), data_dir=data_dir, progress=progress,
                               precision=precision, tf32=tf32)
        record_evaluation(self.path, result)
        return result

    def _inputs(self, n: int, split: str, indices, seed: int, labels: bool):
        """(images, labels or None) from the data set, chosen and binarized as the picture commands do."""
        chosen = None if indices is None else ",".join(str(int(i)) for i in indices)
        x, y, _ = choose_labelled_inputs(self._payload, get_registry(), self.config.image_shape, n=n, split=split,
                                         indices=chosen, seed=seed, labels=labels)
        return x, y

    def _batch(self, images) -> torch.Tensor:
        """``images`` as a float batch (B, C, H, W) of the model's image shape, else one line saying what fits."""
        shape = tuple(self.config.image_shape)
        if not isinstance(images, torch.Tensor):
            raise DrawkitError(f"images must be a torch.Tensor of shape (B, {', '.join(map(str, shape))}), "
                               f"got {type(images).__name__}")
        x = images.unsqueeze(0) if images.dim() == len(shape) else images
        if tuple(x.shape[1:]) != shape or x.dim() != len(shape) + 1 or len(x) == 0:
            raise DrawkitError(f"images must have shape (B, {', '.join(map(str, shape))}) for this model, "
                               f"got {tuple(images.shape)}")
        return x.float()


def load(path, device: Device = None) -> Model:
    """The model in a run folder, a checkpoint.pt or a folder written by `drawkit export`.

    ``device``: "cpu", "cuda", "cuda:1" or a torch.device; None picks CUDA when there is one (--device auto).
    """
    return Model(path, device)


class Trained(NamedTuple):
    """What ``drawkit.train`` returns: ``model, result = drawkit.train(...)``."""

    model: Model   # the run's newest checkpoint, loaded on the training device; model.path is the run folder
    result: dict   # the training summary: steps, device, the last validation measures, checkpoint path


def train(**options) -> Trained:
    """Train as `drawkit train` does, with its options as keywords (``--z-dim 4`` is ``z_dim=4``).

    Defaults, presets (``preset=``) and resuming (``resume=RUN``) are the command's own; only
    ``progress`` defaults to False. Returns the loaded model and the training summary.
    """
    from drawkit import distributed
    from drawkit.cli import chosen_configs
    from drawkit.training import Interrupted
    from drawkit.training import train as run_training

    with _train_context(options) as ctx:
        model_config, config, payload = chosen_configs(ctx)
        progress, several = ctx.params["progress"], ctx.params["distributed"]
    with distributed.session(several, config.device):
        try:
            result = run_training(model_config, config, progress=progress, resume=payload)
        except Interrupted as exc:  # Ctrl-C (or a notebook's stop): the finished step is saved
            hint = f"; continue with drawkit.train(resume={str(config.out)!r})" if exc.resumable else ""
            raise KeyboardInterrupt(f"{exc}{hint}") from None
    return Trained(load(config.out, device=config.device), result)


@cache
def _train_command():
    """The click command behind `drawkit train`, whose options ``train`` takes."""
    import typer

    from drawkit.cli import app

    return typer.main.get_command(app).commands["train"]


def _train_context(options: dict):
    """A context of `drawkit train` with ``options`` given, as if typed, and every other option at its default."""
    command = _train_command()
    params = {param.name: param for param in command.params}
    for name in options:
        if name not in params:
            raise DrawkitError(f"drawkit.train() has no option '{name}'{_did_you_mean(name, params)}; it takes "
                               f"the options 'drawkit train --help' lists, with underscores (--z-dim: z_dim)")
    ctx = command.make_context("train", [])
    # click's ParameterSource (Typer may vendor click): an option marked COMMANDLINE counts as given, not defaulted
    given = type(ctx.get_parameter_source("progress")).COMMANDLINE
    ctx.params["progress"] = False  # a bar is for the terminal; progress=True asks for it
    for name, value in options.items():
        ctx.params[name] = _option_value(params[name], ctx, value)
        ctx.set_parameter_source(name, given)
    return ctx


def _option_value(param, ctx, value):
    """``value`` converted as the command line converts the option's text; a value it would refuse, one line."""
    name = param.name
    if value is None:
        if param.default is not None:
            raise DrawkitError(f"{name}=None: give a value, or leave {name} out for its default ({param.default!r})")
        return None
    if param.multiple and isinstance(value, str):
        value = [value]  # one KEY=VALUE for a repeatable option
    try:
        converted = param.process_value(ctx, value)
    except Exception as exc:  # click's BadParameter, or a type error of the conversion
        raise DrawkitError(f"{name}={value!r}: {getattr(exc, 'message', exc)}") from None
    if _changed_number(value, converted):
        raise DrawkitError(f"{name}={value!r}: give a whole number")
    return list(converted) if param.multiple else converted


def _changed_number(value, converted) -> bool:
    """Whether converting to a number lost something (2.5 -> 2) or turned True into 1."""
    if isinstance(converted, bool) or not isinstance(converted, (int, float)):
        return False
    return isinstance(value, bool) or (isinstance(value, (int, float)) and converted != value)


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_count(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DrawkitError(f"n must be a positive whole number, got {n!r}")


def _seed(seed: Optional[int], device: torch.device):
    """Draw from ``seed`` (the caller's torch stream is left as it was), or, for None, from the caller's stream."""
    return nullcontext() if seed is None else seeded(seed, device)
