"""A classifier from DRAW's parts: "Differentiable RAM" (Gregor et al. 2015, section 4.1), read top to bottom.

The attention and encoder plugins are the ones DRAW uses; there is no canvas, no latent and no
write. Per glimpse t = 1..T the attention reads the image with its window placed by the recurrent
state of the previous glimpse, h_{t-1} (h_0 = 0), and the encoder is the recurrent core:
h_t, state = encoder(patch, h_{t-1}, state). After the last glimpse a linear layer gives one logit
per class; training minimises the mean cross-entropy.

Words as in model.py: a glimpse is one step t; the patch is what the read returns at a step; a run
is several consecutive glimpses done by one call of ``run_glimpses`` (the unit ``compile_glimpses``
compiles).
Shapes: B batch, T glimpses, K classes, H = config.hidden, (C, Hi, Wi) = config.image_shape.
"""
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from drawkit.model import GLIMPSES_PER_CALL, check_read_shape

TASK = "classify"  # what the checkpoint's model_config says under "task"
#: the read window when neither the user nor the encoder/attention plugin sets one (the paper's 12 x 12)
FALLBACK_READ_SIZE = 12


@dataclass
class ClassifierConfig:
    """Everything needed to rebuild a classifier; stored in every checkpoint (with "task": "classify")."""

    image_shape: tuple = (1, 28, 28)   # (channels, height, width) of the data
    glimpses: int = 8                  # T: glimpses per image
    encoder: str = "lstm"              # registered encoder plugin: the recurrent core
    attention: str = "filterbank"      # registered attention plugin: the read
    hidden: int = 256                  # H: the recurrent state that places each read
    read_size: Optional[int] = None    # N of the read window; None: the plugins' default, else 12
    num_classes: int = 10              # K: the data set's classes
    encoder_options: dict = field(default_factory=dict)    # extra keywords for the encoder factory
    attention_options: dict = field(default_factory=dict)  # extra keywords for the attention factory

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        d["task"] = TASK
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        d = {k: v for k, v in d.items() if k != "task"}
        d["image_shape"] = tuple(d["image_shape"])
        return cls(**d)


class Classified(NamedTuple):
    """What a training step of a classifier returns: ``loss`` per image, as DrawOutput has."""

    logits: torch.Tensor  # (B, K)
    labels: torch.Tensor  # (B,) long

    @property
    def loss(self) -> torch.Tensor:
        """Per-image cross-entropy (B,), nats."""
        return F.cross_entropy(self.logits, self.labels, reduction="none")

    @property
    def errors(self) -> torch.Tensor:
        """(B,) bool: the most likely class is not the label."""
        return self.logits.argmax(1) != self.labels


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig, encoder: nn.Module, attention: nn.Module):
        super().__init__()
        self.config = config
        self.attention = attention  # read_image(x, h) -> patch, else read(x, x_hat, h) -> patch
        self.encoder = encoder      # (patch, h_prev, state) -> (out, state): the recurrent core
        # the optional image-only read, else DRAW's read of [x, x_hat] with the error image of an empty canvas
        self.reads_image = callable(getattr(attention, "read_image", None)) and hasattr(attention,
                                                                                        "image_glimpse_shape")
        # the attention and the encoder take an H-wide state; an encoder of another width is mapped to it
        self.to_hidden = (nn.Identity() if encoder.output_size == config.hidden
                          else nn.Linear(encoder.output_size, config.hidden))
        self.head = nn.Linear(encoder.output_size, config.num_classes)  # -> logits
        # run length: glimpses per call of _run_glimpses; all T until compile_glimpses()
        self.glimpses_per_call = config.glimpses

    def read(self, x: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """The patch (B, *glimpse_shape) at the window h_prev places."""
        if self.reads_image:
            return self.attention.read_image(x, h_prev)
        return self.attention.read(x, x - 0.5, h_prev)  # x_hat = x - sigmoid(c_0), c_0 = 0

    def glimpse(self, x, h_prev, state):
        """One glimpse t: read at h_{t-1}, then the core. Returns out_t (B, encoder.output_size), h_t (B, H), state."""
        patch = self.read(x, h_prev)                            # (B, *glimpse_shape), placed by h_{t-1}
        out, state = self.encoder(patch, h_prev, state)         # (B, output_size)
        return out, self.to_hidden(out), state                  # h_t (B, H) places the next read

    def run_glimpses(self, x, h, state, k: int):
        """A run: k glimpses in a row from h (B, H) and the encoder's state; returns (out, h, state) after the last."""
        out = None
        for _ in range(k):
            out, h, state = self.glimpse(x, h, state)
        return out, h, state

    _run_glimpses = run_glimpses  # what forward calls; compile_glimpses() replaces it with a compiled run_glimpses

    def forward(self, x: torch.Tensor, observe: Optional[Callable] = None) -> torch.Tensor:
        """x: (B, C, Hi, Wi) in [0, 1] -> logits (B, K).

        ``observe(t, h_prev, h, logits_t)`` is called after each glimpse t (0-based) when given: h_prev
        (B, H) placed that glimpse's read, h (B, H) places the next one, logits_t (B, K) is the head
        applied after glimpse t (the belief so far).
        """
        batch, T = x.shape[0], self.config.glimpses
        h = x.new_zeros(batch, self.config.hidden)              # h_0 = 0
        state = self.encoder.initial_state(batch, x)
        run_length = 1 if observe is not None else self.glimpses_per_call  # observe sees every glimpse
        out = None
        for t in range(0, T, run_length):                       # each run covers glimpses t .. t + k - 1
            h_prev = h
            out, h, state = self._run_glimpses(x, h, state, min(run_length, T - t))
            if observe is not None:
                observe(t, h_prev, h, self.head(out).float())
        return self.head(out).float()                           # (B, K); float32 under bf16 autocast too

    def compile_glimpses(self, mode: Optional[str] = None, glimpses_per_call: int = GLIMPSES_PER_CALL) -> "Classifier":
        """Compile runs of glimpses with torch.compile, as Draw.compile_glimpses does: the same mathematics."""
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # a CUDA_HOME note on CPU machines
        self.glimpses_per_call = glimpses_per_call
        self._run_glimpses = torch.compile(self.run_glimpses, dynamic=False,
                                           mode=None if mode == "default" else mode)
        return self


class WithLoss(nn.Module):
    """What training steps call: (images, labels) -> Classified, whose ``loss.mean()`` is the mean cross-entropy.

    train_step takes ``model(batch).loss.mean()`` for either kind of model; under DDP this wrapper is
    what is wrapped, so the forward goes through DDP. The classifier itself is what is saved.
    """

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, batch) -> Classified:
        images, labels = batch
        return Classified(self.classifier(images), labels)


@torch.no_grad()
def classification_metrics(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                           on_batch: Optional[Callable[[int], None]] = None, pad: bool = False) -> dict:
    """Error rate, accuracy and mean cross-entropy (nats/image) over ``images`` (in the model's input form).

    ``pad``: every batch has ``batch_size`` rows (the last one padded, the padding left out of the
    sums), as validation during training does for a compiled model.
    """
    from drawkit.bound import evaluation_batches

    totals = torch.zeros(2, dtype=torch.float64, device=next(model.parameters()).device)  # cross-entropy, errors
    for (x, y), n in evaluation_batches(model, (images, labels), batch_size, pad):
        out = Classified(model(x)[:n], y[:n])
        totals[0] += out.loss.double().sum()
        totals[1] += out.errors.double().sum()
        if on_batch is not None:
            on_batch(n)
    nll, error_rate = (totals / len(images)).tolist()
    return {"error_rate": error_rate, "accuracy": 1 - error_rate, "nll": nll, "n_images": len(images)}


def resolve_classifier_config(config: ClassifierConfig, registry) -> ClassifierConfig:
    """Fill an unset read window from the plugins' defaults (encoder first), then the paper's 12."""
    if config.read_size is not None:
        return config
    preferred = [registry.get(kind, getattr(config, kind)).defaults.get("read_size") for kind in ("encoder", "attention")]
    return replace(config, read_size=next((v for v in preferred if v is not None), FALLBACK_READ_SIZE))


def _freeze_unused(model: Classifier) -> None:
    """Freeze what a classification never reaches (the attention's write): every trainable parameter then
    gets a gradient each step, which DistributedDataParallel requires. One forward of a blank image finds them."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()  # the probe must not move a plugin's running statistics (batch norm) or draw dropout masks
    with torch.enable_grad():
        logits = model(torch.zeros(1, *model.config.image_shape))
        grads = torch.autograd.grad(logits.sum(), trainable, allow_unused=True)
    model.train(was_training)
    for parameter, grad in zip(trainable, grads):
        if grad is None:
            parameter.requires_grad_(False)


def build_classifier(config: ClassifierConfig, registry) -> Classifier:
    """Assemble the classifier from the encoder and attention plugins the config names."""
    config = resolve_classifier_config(config, registry)
    attention_reg = registry.get("attention", config.attention)
    attention = attention_reg.create(  # created exactly as for DRAW; its write goes unused
        config.attention_options, image_shape=tuple(config.image_shape), hidden_size=config.hidden,
        read_size=config.read_size, write_size=attention_reg.defaults.get("write_size", config.read_size))
    reads_image = callable(getattr(attention, "read_image", None)) and hasattr(attention, "image_glimpse_shape")
    # what Classifier.read returns per image, measured once: a declared shape that is not it is refused here
    glimpse_shape = check_read_shape(attention, attention_reg, tuple(config.image_shape), config.hidden,
                                     image_only=reads_image)
    encoder = registry.get("encoder", config.encoder).create(
        config.encoder_options, glimpse_shape=tuple(glimpse_shape), decoder_size=config.hidden,
        hidden_size=config.hidden)
    model = Classifier(config, encoder, attention)
    _freeze_unused(model)
    return model
