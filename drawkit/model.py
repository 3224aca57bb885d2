"""DRAW (Gregor et al. 2015), read top to bottom.

The encoder and the attention (read/write) come from plugins; the decoder LSTM,
the posterior Q(z|h_enc) and the additive canvas are DRAW itself and live here.

Words, one meaning each:
  step (a glimpse)  one step t of the T steps: read, encode, sample z_t, decode, write.
                    ``config.glimpses`` is T; "per glimpse" means per step.
  patch             what ``attention.read`` returns at a step, r_t in the paper, (B, *glimpse_shape).
                    The plugin contract calls its shape ``glimpse_shape`` and the encoder's first
                    argument ``glimpse``; those kept names mean the patch.
  run               several consecutive steps done by one call of ``run_steps``, the unit that
                    ``compile_glimpses`` compiles; ``run_length`` steps long. The kept public names
                    ``compile_glimpses``, ``glimpses_per_call`` and ``GLIMPSES_PER_CALL`` are about runs.
Shapes: B batch, T steps, k steps in a run, z = config.z_dim, (C, H, W) = config.image_shape.
"""
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn

from drawkit.errors import DrawkitError
from drawkit.likelihoods import make_likelihood
from drawkit.losses import gaussian_kl
from drawkit.lstm import lstm_cell

#: used when neither the user nor the encoder/attention plugin sets a window size (the paper's MNIST model)
FALLBACK_SIZES = {"read_size": 2, "write_size": 5}
#: torch.compile modes for compile_glimpses; "reduce-overhead" adds CUDA graphs on a GPU
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CANVAS_STARTS = ("zero", "learned")  # c_0: zeros, or a learned bias started at the data's mean image
GLIMPSES_PER_CALL = 8  # run length once compiled: far fewer calls than T, a graph that compiles in under a minute
#: the arguments drawkit passes to every attention and encoder factory (options cannot set them)
ATTENTION_ARGS = ("image_shape", "hidden_size", "read_size", "write_size")
ENCODER_ARGS = ("glimpse_shape", "decoder_size", "hidden_size")  # glimpse_shape: the shape of the read patch


@dataclass
class DrawConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    image_shape: tuple = (1, 28, 28)   # (channels, height, width) of the data
    glimpses: int = 64                 # T: steps (glimpses) per image
    encoder: str = "lstm"              # registered encoder plugin
    attention: str = "filterbank"      # registered attention plugin
    hidden: int = 256                  # units of the decoder LSTM (and of a recurrent encoder)
    z_dim: int = 100                   # latent size per step
    read_size: Optional[int] = None    # N of the read window; None: the plugins' default, else 2
    write_size: Optional[int] = None   # N of the write window; None: the plugins' default, else 5
    likelihood: Optional[str] = None   # D(x | c_T): bernoulli (binary images) or logistic (8-bit); None: bernoulli
    encoder_options: dict = field(default_factory=dict)    # extra keywords for the encoder factory
    attention_options: dict = field(default_factory=dict)  # extra keywords for the attention factory
    canvas_start: str = "zero"         # c_0: zero, or learned (a parameter, started at the data's mean image)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DrawConfig":
        d = dict(d)
        d["image_shape"] = tuple(d["image_shape"])
        return cls(**d)


class DrawOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B,) -log D(x | c_T), nats
    kl: torch.Tensor              # (B, T) KL(Q(z_t) || N(0, I)) per step, nats
    canvas: torch.Tensor          # (B, C, H, W) final canvas logits c_T
    log_ratio: Optional[torch.Tensor] = None  # (B,) log q(z|x) - log p(z) of the drawn z, for importance weights

    @property
    def loss(self) -> torch.Tensor:
        """Per-image negative variational bound (B,), nats."""
        return self.reconstruction + self.kl.sum(1)


class Draw(nn.Module):
    def __init__(self, config: DrawConfig, encoder: nn.Module, attention: nn.Module):
        super().__init__()
        self.config = config
        self.attention = attention  # read(x, x_hat, h_dec) -> patch; write(h_dec) -> canvas update
        self.encoder = encoder      # (patch, h_dec, state) -> (h_enc, state)
        self.posterior = nn.Linear(encoder.output_size, 2 * config.z_dim)  # -> (mu, log sigma^2)
        self.decoder = nn.LSTMCell(config.z_dim, config.hidden)
        self.likelihood = make_likelihood(config.likelihood, config.image_shape)  # may hold parameters
        if config.canvas_start == "learned":  # the paper's learned bias for c_0 (section 2)
            self.canvas_0 = nn.Parameter(torch.zeros(config.image_shape))
        # run length: steps per call of _run_steps; all T until compile_glimpses() (public: bench reads it)
        self.glimpses_per_call = config.glimpses

    def _blank(self, batch: int, ref: torch.Tensor):
        """Where every image starts: canvas c_0 (B, C, H, W), 0 or learned; decoder state (h, c) = 0 (B, hidden)."""
        canvas = ref.new_zeros(batch, *self.config.image_shape)
        if self.config.canvas_start == "learned":
            canvas = canvas + self.canvas_0
        h_dec = ref.new_zeros(batch, self.config.hidden)
        return canvas, (h_dec, torch.zeros_like(h_dec))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None,
                observe: Optional[Callable] = None, log_ratio: bool = False) -> DrawOutput:
        """x: (B, C, H, W) in [0, 1]. noise: optional (T, B, z) standard normal draws.

        ``observe(t, h_prev, h, canvas)`` is called after each step (pictures of reading and writing).
        ``log_ratio`` also returns log q(z|x) - log p(z) of the z drawn, for importance-weighted bounds.
        """
        batch, T = x.shape[0], self.config.glimpses
        if noise is None:  # one (T, B, z) block, drawn outside any compiled code: the same stream either way
            noise = x.new_empty(T, batch, self.config.z_dim).normal_()
        canvas, dec_state = self._blank(batch, x)
        enc_state = self.encoder.initial_state(batch, x)
        run_length = 1 if observe is not None else self.glimpses_per_call  # observe sees every step
        kls, ratios = [], []
        for t in range(0, T, run_length):  # each run covers steps t .. t + run_length - 1
            h_prev = dec_state[0]
            canvas, dec_state, enc_state, kl, ratio = self._run_steps(
                x, canvas, dec_state, enc_state, noise[t:t + run_length], log_ratio)
            kls.append(kl)                 # (B, k)
            if log_ratio:
                ratios.append(ratio)       # (B,)
            if observe is not None:
                observe(t, h_prev, dec_state[0], canvas)
        ratio = torch.stack(ratios).sum(0) if log_ratio else None
        return DrawOutput(self.likelihood.nll(canvas, x), torch.cat(kls, dim=1), canvas, ratio)

    def step(self, x, canvas, dec_state, enc_state, eps, log_ratio: bool = False):
        """One step t: read, encode, sample z_t, then decode and write. eps: (B, z) standard normal.

        Returns the new canvas (B, C, H, W), decoder and encoder states, KL (B,) and log-ratio (B,) or None.
        """
        h_dec, _ = dec_state                                    # h_dec_{t-1}
        x_hat = x - torch.sigmoid(canvas)                       # error image (B, C, H, W)
        patch = self.attention.read(x, x_hat, h_dec)            # (B, *glimpse_shape), placed by h_dec_{t-1}
        h_enc, enc_state = self.encoder(patch, h_dec, enc_state)
        mu, logvar = self.posterior(h_enc).float().chunk(2, dim=1)  # (B, z) each; float32 under bf16 autocast too
        z = mu + eps * torch.exp(0.5 * logvar)                  # reparameterisation
        # log N(z; mu, sigma) - log N(z; 0, I) of this z (the 2 pi terms cancel), for importance weights
        ratio = 0.5 * (z.pow(2) - eps.pow(2) - logvar).sum(1) if log_ratio else None
        canvas, dec_state = self._decode_and_write(z, dec_state, canvas)
        return canvas, dec_state, enc_state, gaussian_kl(mu, logvar), ratio

    def _decode_and_write(self, z, dec_state, canvas):
        """z_t (B, z) -> h_dec_t, then c_t = c_{t-1} + write(h_dec_t).

        Both step and generate call it, so drawing from the prior cannot drift from training.
        """
        h_dec, c_dec = lstm_cell(self.decoder, z, dec_state)    # (B, hidden) each
        canvas = canvas + self.attention.write(h_dec).float()   # (B, C, H, W), placed by h_dec_t; a float32 sum
        return canvas, (h_dec, c_dec)

    def run_steps(self, x, canvas, dec_state, enc_state, noise, log_ratio: bool = False):
        """A run: k = len(noise) steps in a row, noise (k, B, z). KL per step (B, k), summed log-ratio (B,) or None."""
        kls, ratio = [], 0
        for t in range(noise.shape[0]):
            canvas, dec_state, enc_state, kl, step_ratio = self.step(
                x, canvas, dec_state, enc_state, noise[t], log_ratio)
            kls.append(kl)
            ratio = ratio + step_ratio if log_ratio else None
        return canvas, dec_state, enc_state, torch.stack(kls, dim=1), ratio

    _run_steps = run_steps  # what forward calls; compile_glimpses() replaces it with a compiled run_steps

    def compile_glimpses(self, mode: Optional[str] = None, glimpses_per_call: int = GLIMPSES_PER_CALL) -> "Draw":
        """Compile runs with torch.compile: their hundreds of small ops become a few fused kernels.

        One compiled call covers a run of ``glimpses_per_call`` steps (and one more graph covers a shorter
        last run): fewer, larger calls cut the per-call cost of compiled code and of autograd, while the
        graph stays a fixed size whatever T is (runs of 8 steps of the paper's model compile in well under
        a minute). The noise is drawn outside the graph, so a compiled model consumes the random stream
        exactly as the eager one does. ``mode='reduce-overhead'`` adds CUDA graphs.
        """
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # a CUDA_HOME note on CPU machines
        self.glimpses_per_call = glimpses_per_call
        self._run_steps = torch.compile(self.run_steps, dynamic=False, mode=None if mode == "default" else mode)
        return self

    @torch.no_grad()
    def start_canvas_at(self, images: torch.Tensor) -> None:
        """Set a learned c_0 to the logit of the mean of ``images`` (N, C, H, W) in [0, 1]: sigmoid(c_0) is the
        mean image, so the first glimpses refine it instead of painting it from grey."""
        mean = images.float().mean(0).clamp(1e-3, 1 - 1e-3)
        self.canvas_0.copy_(torch.logit(mean))

    @torch.no_grad()
    def generate(self, n: int, observe: Optional[Callable] = None) -> torch.Tensor:
        """Draw n images from the prior: z_t ~ N(0, I), decoder only; sigmoid(c_T) as (n, C, H, W).

        One fresh (n, z) draw per step, in step order. ``observe(t, h_prev, h, canvas)`` is called
        after each step, as in ``forward``.
        """
        ref = next(self.parameters())
        canvas, dec_state = self._blank(n, ref)
        for t in range(self.config.glimpses):
            z = torch.randn(n, self.config.z_dim, device=ref.device, dtype=ref.dtype)
            h_prev = dec_state[0]
            canvas, dec_state = self._decode_and_write(z, dec_state, canvas)
            if observe is not None:
                observe(t, h_prev, dec_state[0], canvas)
        return torch.sigmoid(canvas)


def resolve_config(config: DrawConfig, registry) -> DrawConfig:
    """Fill unset window sizes from the plugins' defaults (encoder first), then the paper's."""
    filled = {}
    for field_name, fallback in FALLBACK_SIZES.items():
        if getattr(config, field_name) is None:
            preferred = [registry.get(kind, getattr(config, kind)).defaults.get(field_name)
                         for kind in ("encoder", "attention")]
            filled[field_name] = next((v for v in preferred if v is not None), fallback)
    return replace(config, **filled)


def check_read_shape(attention: nn.Module, registration, image_shape: tuple, hidden: int,
                     image_only: bool = False) -> tuple:
    """What the attention's read returns per image, which must be the shape it declares; else one line.

    One read of a blank image (batch of 1) with a zero state: ``read(x, x - 0.5, h)``, or with
    ``image_only`` ``read_image(x, h)`` (a classifier's), checked against ``glimpse_shape`` (or
    ``image_glimpse_shape``). The probe changes nothing: no gradient, the random streams restored,
    every submodule back in its mode.
    """
    declared_name, read_name = ("image_glimpse_shape", "read_image") if image_only else ("glimpse_shape", "read")
    package = registration.package  # "(registered in code)" for a plugin registered with pm.register
    where = package.strip("()") if package.startswith("(") else f"package {package}"
    who = f"attention '{registration.name}' (plugin '{registration.plugin}', {where})"
    declared = getattr(attention, declared_name, None)
    try:
        declared = tuple(int(n) for n in declared)
    except (TypeError, ValueError):
        raise DrawkitError(f"{who} has no {declared_name} (C, H, W), or not one of whole numbers: "
                           f"{declared!r}; set it to the shape its {read_name}() returns per image") from None
    modes = [(module, module.training) for module in attention.modules()]
    attention.eval()  # a read must not move running statistics (batch norm) while it is measured
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            x = torch.zeros(1, *image_shape)
            h = x.new_zeros(1, hidden)
            patch = attention.read_image(x, h) if image_only else attention.read(x, x - 0.5, h)
    finally:
        for module, training in modes:
            module.training = training
    actual = tuple(patch.shape[1:]) if isinstance(patch, torch.Tensor) else None
    if actual != declared:
        got = f"patches of shape {actual}" if actual is not None else f"a {type(patch).__name__}, not a tensor"
        raise DrawkitError(f"{who} declares {declared_name} {declared}, but its {read_name}() returns {got} per "
                           f"image; make {declared_name} what {read_name}() returns")
    return declared


def build_model(config: DrawConfig, registry) -> Draw:
    """Assemble DRAW from the encoder and attention plugins the config names.

    The attention's read is measured once (``check_read_shape``): a ``glimpse_shape`` that is not what
    ``read`` returns is refused here, naming the plugin, not later inside the encoder.
    """
    config = resolve_config(config, registry)
    attention_reg = registry.get("attention", config.attention)
    attention = attention_reg.create(
        config.attention_options, image_shape=tuple(config.image_shape), hidden_size=config.hidden,
        read_size=config.read_size, write_size=config.write_size)
    check_read_shape(attention, attention_reg, tuple(config.image_shape), config.hidden)
    encoder = registry.get("encoder", config.encoder).create(
        config.encoder_options, glimpse_shape=tuple(attention.glimpse_shape), decoder_size=config.hidden,
        hidden_size=config.hidden)
    return Draw(config, encoder, attention)
