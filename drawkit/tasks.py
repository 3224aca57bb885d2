"""The kinds of model drawkit trains, and the one lookup from a kind's name to what knows how to handle it.

``--task generate`` is DRAW (model.py), scored by its bound on -log p(x). ``--task classify`` is
the classifier of the paper's section 4.1 (classifier.py), scored by its error rate over the data
set's classes. A checkpoint's ``model_config["task"]`` names its kind (absent: generate, as every
checkpoint written before there were two kinds). Training, evaluation, bench and the commands that
draw ask the kind object found here; none of them compares task names.

Each kind provides (both below, in the same order):
  name, generative, score    its --task name; whether it can draw (sample, reconstruct); the
                             validation measure best.pt holds the lowest of
  config_from_dict, from_options, build
                             the model config from a checkpoint's model_config or from the model options
                             (a DrawConfig) of `drawkit train` and bench; the model from its config
  configure, check           `drawkit train`'s model options completed from the data set and the plugins
  default_binarize, load_data, batch, trainable
                             what training feeds train_step: ``trainable(model)(batch).loss`` is (B,)
  train_metrics, progress_text, validate, validation_text, summary
                             what training measures, logs and prints
  evaluate                   `drawkit evaluate` on a checkpoint of this kind
  synthetic_batch            `drawkit bench`'s stand-in data
"""
from dataclasses import fields, replace

import torch

from drawkit import distributed
from drawkit.bound import held_out, variational_bound
from drawkit.classifier import (ClassifierConfig, WithLoss, build_classifier, classification_metrics,
                                resolve_classifier_config)
from drawkit.data import Batches, binarize, fixed_binarization, load_labelled_split, load_split, num_classes, \
    to_unit_float, training_split
from drawkit.errors import DrawkitError, NotGenerative, check_choice, check_positive
from drawkit.likelihoods import LIKELIHOODS
from drawkit.model import CANVAS_STARTS, DrawConfig, build_model, resolve_config

DEFAULT = "generate"  # the kind of a checkpoint whose model_config names none


class Generate:
    """DRAW: draws images; trained and validated on the negative variational bound (nats/image)."""

    name = "generate"
    generative = True
    score = "nll_bound"

    def config_from_dict(self, d: dict) -> DrawConfig:
        return DrawConfig.from_dict(d)

    def from_options(self, options: DrawConfig, num_classes: int) -> DrawConfig:
        """The model config from `drawkit train`'s (or bench's) model options."""
        return options

    def build(self, config: DrawConfig, registry):
        return build_model(config, registry)

    def configure(self, options: DrawConfig, dataset, name: str, registry) -> DrawConfig:
        """Image shape and likelihood from the data set, window sizes from the plugins."""
        options = replace(options, image_shape=tuple(dataset.image_shape),
                          likelihood=options.likelihood or getattr(dataset, "default_likelihood", "bernoulli"))
        return resolve_config(options, registry)

    def check(self, config: DrawConfig) -> None:
        check_positive({"--glimpses": config.glimpses, "--hidden": config.hidden, "--z-dim": config.z_dim,
                        "--read-size": config.read_size, "--write-size": config.write_size})
        check_choice("--likelihood", config.likelihood, LIKELIHOODS)
        check_choice("--canvas-start", config.canvas_start, CANVAS_STARTS)

    def default_binarize(self, dataset) -> str:
        return getattr(dataset, "default_binarize", "none")

    def load_data(self, dataset, config, device: torch.device):
        """The training batches, on ``device``, and the validation images, binarized once with the run's seed
        (in page-locked memory for a GPU: each validation copies them batch by batch)."""
        train_images, _, redraw = training_split(dataset, config.dataset, config.data_dir, device, labelled=False)
        valid_images = load_split(dataset, config.dataset, "valid", config.data_dir)[:config.val_images]
        valid_x = held_out(fixed_binarization(valid_images, config.binarize, seed=config.seed), device)
        return Batches(train_images, config.batch_size, config.seed, redraw=redraw), valid_x

    def start(self, model, batches: Batches, config) -> None:
        """Before a fresh run's first step: a learned c_0 starts at the training images' mean (10,000 of them)."""
        if model.config.canvas_start == "learned":
            model.start_canvas_at(to_unit_float(batches.images[:10_000]))

    def batch(self, images: torch.Tensor, mode: str) -> torch.Tensor:
        """This process's share of a global batch, in the model's input form."""
        return binarize(to_unit_float(distributed.shard(images)), mode)

    def trainable(self, model):
        return model  # model(x).loss: the negative bound per image

    def train_metrics(self, output) -> dict:
        rec, kl = distributed.mean_over_ranks(output.reconstruction.mean(), output.kl.sum(1).mean())
        return {"loss": rec + kl, "reconstruction": rec, "kl": kl}

    def progress_text(self, record: dict) -> str:
        return f"{record['loss']:.1f} nats/img (rec {record['reconstruction']:.1f}, kl {record['kl']:.1f})"

    def validate(self, model, valid_x: torch.Tensor, batch_size: int) -> dict:
        """The bound in batches of the training batch size (the last one padded): one shape for a compiled model."""
        return variational_bound(model, valid_x, batch_size, pad=True)

    def validation_text(self, record: dict) -> str:
        return (f"validation bound {record['nll_bound']:.2f} nats/image (rec {record['reconstruction']:.2f}, "
                f"kl {record['kl']:.2f})")

    def summary(self, result: dict) -> str:
        """The end of `drawkit train`'s last line: the last validation, when there was one."""
        return f"; validation bound {result['nll_bound']:.2f} nats/image" if "nll_bound" in result else ""

    def evaluate(self, model, payload, dataset, name, split, **options) -> tuple[dict, str]:
        from drawkit.evaluate import evaluate_bound  # evaluate.py loads checkpoints, which ask this module

        return evaluate_bound(model, payload, dataset, name, split, **options)

    def synthetic_batch(self, config: DrawConfig, batch_size: int, device: torch.device) -> torch.Tensor:
        """Binary noise images (B, C, H, W)."""
        return (torch.rand(batch_size, *config.image_shape, device=device) > 0.5).float()


#: `drawkit train` model options a classifier does not have, with the value that means "not set"
GENERATION_ONLY = {"z_dim": DrawConfig.z_dim, "write_size": None, "likelihood": None,
                   "canvas_start": DrawConfig.canvas_start}
CLASSIFIER_FIELDS = {f.name for f in fields(ClassifierConfig)}


class Classify:
    """The classifier of DRAW's section 4.1: glimpses, a recurrent core and a linear layer over the classes.

    Trained on the mean cross-entropy; validated on the error rate, the accuracy and the mean
    cross-entropy (nats/image). Images are fed as they are (grey), unless --binarize says otherwise:
    a data set's default binarization serves a Bernoulli likelihood, which a classifier has not.
    """

    name = "classify"
    generative = False
    score = "error_rate"

    def config_from_dict(self, d: dict) -> ClassifierConfig:
        return ClassifierConfig.from_dict(d)

    def from_options(self, options: DrawConfig, num_classes: int) -> ClassifierConfig:
        """The model config from `drawkit train`'s (or bench's) model options; the generation-only ones are left."""
        return ClassifierConfig(**{k: v for k, v in vars(options).items() if k in CLASSIFIER_FIELDS},
                                num_classes=num_classes)

    def build(self, config: ClassifierConfig, registry):
        return build_classifier(config, registry)

    def configure(self, options, dataset, name: str, registry) -> ClassifierConfig:
        """`drawkit train`'s options (a DrawConfig) or a resumed run's ClassifierConfig, completed."""
        if isinstance(options, DrawConfig):
            for field, unset in GENERATION_ONLY.items():
                if getattr(options, field) != unset:
                    raise DrawkitError(f"--{field.replace('_', '-')} is for --task generate; a classifier has no "
                                       f"latent, canvas or likelihood: leave it out with --task classify")
        classes = num_classes(dataset, name)
        if isinstance(options, DrawConfig):
            options = self.from_options(options, classes)
        elif options.num_classes != classes:
            raise DrawkitError(f"dataset '{name}' now has {classes} classes, but this run's classifier was "
                               f"trained on {options.num_classes} classes; resume with the data it was trained on")
        options = replace(options, image_shape=tuple(dataset.image_shape))
        return resolve_classifier_config(options, registry)

    def check(self, config: ClassifierConfig) -> None:
        check_positive({"--glimpses": config.glimpses, "--hidden": config.hidden, "--read-size": config.read_size})

    def default_binarize(self, dataset) -> str:
        return "none"

    def load_data(self, dataset, config, device: torch.device):
        """Training batches of (images, labels) on ``device``; the validation (images, labels)."""
        train_images, train_labels, redraw = training_split(dataset, config.dataset, config.data_dir, device,
                                                            labelled=True)
        valid_images, valid_labels = load_labelled_split(dataset, config.dataset, "valid", config.data_dir)
        valid_x = fixed_binarization(valid_images[:config.val_images], config.binarize, seed=config.seed)
        batches = Batches(train_images, config.batch_size, config.seed, labels=train_labels, redraw=redraw)
        return batches, (held_out(valid_x, device), held_out(valid_labels[:config.val_images], device))

    def start(self, model, batches: Batches, config) -> None:
        """Nothing to set from the data before a classifier's first step."""

    def batch(self, batch, mode: str):
        images, labels = batch
        return binarize(to_unit_float(distributed.shard(images)), mode), distributed.shard(labels)

    def trainable(self, model):
        return WithLoss(model)  # (images, labels) -> Classified, whose loss is the cross-entropy per image

    def train_metrics(self, output) -> dict:
        loss, error_rate = distributed.mean_over_ranks(output.loss.mean(), output.errors.float().mean())
        return {"loss": loss, "error_rate": error_rate}

    def progress_text(self, record: dict) -> str:
        return f"loss {record['loss']:.3f} nats/img, train error {record['error_rate']:.1%}"

    def validate(self, model, valid, batch_size: int) -> dict:
        """The measures in batches of the training batch size (the last one padded): one shape for a compiled model."""
        return classification_metrics(model, *valid, batch_size, pad=True)

    def validation_text(self, record: dict) -> str:
        return (f"validation error {record['error_rate']:.2%} (accuracy {record['accuracy']:.2%}, "
                f"cross-entropy {record['nll']:.4f} nats)")

    def summary(self, result: dict) -> str:
        return f"; validation error {result['error_rate']:.2%}" if "accuracy" in result else ""

    def evaluate(self, model, payload, dataset, name, split, **options) -> tuple[dict, str]:
        from drawkit.evaluate import evaluate_classifier  # evaluate.py loads checkpoints, which ask this module

        return evaluate_classifier(model, payload, dataset, name, split, **options)

    def synthetic_batch(self, config: ClassifierConfig, batch_size: int, device: torch.device):
        """Uniform noise images (B, C, H, W) and random labels (B,)."""
        images = torch.rand(batch_size, *config.image_shape, device=device)
        return images, torch.randint(config.num_classes, (batch_size,), device=device)


TASKS = {kind.name: kind for kind in (Generate(), Classify())}


def task_named(name: str):
    """The kind `drawkit train --task NAME` trains; one line listing the choices for another name."""
    check_choice("--task", name, TASKS)
    return TASKS[name]


def task_of(model_config: dict):
    """The kind of model a checkpoint holds, from its model_config (no "task": generate)."""
    name = model_config.get("task", DEFAULT) if isinstance(model_config, dict) else DEFAULT
    if name not in TASKS:
        raise DrawkitError(f"this checkpoint holds a model of kind '{name}', which this drawkit does not know "
                           f"(it knows {', '.join(TASKS)}); upgrade drawkit")
    return TASKS[name]


def require_generative(kind, command: str) -> None:
    """Refuse, in one line, to run a command that draws on a model that cannot draw."""
    if not kind.generative:
        raise NotGenerative(f"drawkit {command} needs a generative checkpoint (this one was trained with "
                            f"--task {kind.name})")

