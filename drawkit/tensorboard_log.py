"""`drawkit train --tensorboard`: the run's measurements as TensorBoard events in OUT/tensorboard/.

Every metrics line becomes scalars at its training step, tagged ``<split>/<measure>``: the numbers
of metrics.jsonl (``train/loss``, ``valid/nll_bound``, ...) plus the learning rate and images per
second, and for DRAW the KL of each glimpse (``kl_per_glimpse/tNN``, on the main process's share
of the batch). After each validation a model that draws adds two pictures: samples from the prior
and a few validation images beside their reconstructions, drawn from a fixed seed, so one epoch's
pictures compare with the next and training's random stream is untouched.

A resumed run writes a new event file in the same folder, starting with a purge at the step after
its checkpoint: TensorBoard then hides whatever an earlier, interrupted session wrote past that
step, so no step shows twice. The package is optional (``pip install 'drawkit[tensorboard]'``).
"""
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from drawkit.bound import evaluation_batches
from drawkit.errors import DrawkitError
from drawkit.frames import Style, pairs
from drawkit.render import image_grid
from drawkit.rng import seeded

FOLDER = "tensorboard"
SAMPLES = 16        # images drawn from the prior after each validation
RECONSTRUCTED = 8   # validation images shown beside their reconstructions
PICTURE_SEED = 0    # the z of every validation's pictures: the same draws each time
BOOKKEEPING = ("split", "step", "epoch", "time_s", "start_step", "n_images", "steps_per_s")  # not plotted (images_per_s is)


def summary_writer_class():
    """torch's SummaryWriter; a one-line error naming the extra to install when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DrawkitError("--tensorboard needs TensorBoard: pip install 'drawkit[tensorboard]' "
                           "(or train without --tensorboard; a resumed run: add --no-tensorboard)") from None
    return SummaryWriter


def check_installed() -> None:
    """Refuse --tensorboard without TensorBoard up front, not after training started."""
    summary_writer_class()


class TensorBoardLog:
    """Writes one run's metrics records and validation pictures to OUT/tensorboard."""

    def __init__(self, writer, kind, batch_size: int):
        self.writer, self.kind, self.batch_size = writer, kind, batch_size

    def training(self, record: dict, output) -> None:
        """A training metrics record as scalars (the learning rate among them), with images/s and the KL of each glimpse."""
        step = record["step"]
        self.scalars(record)
        self.writer.add_scalar("train/images_per_s", record["steps_per_s"] * self.batch_size, step)
        for t, kl in enumerate(kl_per_glimpse(output), start=1):
            self.writer.add_scalar(f"kl_per_glimpse/t{t:02d}", kl, step)

    def validation(self, record: dict, model, valid) -> None:
        """A validation record as scalars; for a model that draws, its samples and reconstructions too."""
        self.scalars(record)
        if self.kind.generative:
            self.pictures(model, valid, record["step"])
        self.writer.flush()  # a validation is a natural point to be readable on disk

    def scalars(self, record: dict) -> None:
        """Every measure of a metrics record, tagged ``<split>/<name>``."""
        for name, value in record.items():
            if name not in BOOKKEEPING and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['split']}/{name}", value, record["step"])

    def pictures(self, model, valid_x: torch.Tensor, step: int) -> None:
        """Samples and reconstructions, each from PICTURE_SEED: the same z every validation."""
        device = next(model.parameters()).device
        with seeded(PICTURE_SEED, device):
            samples = sample_grid(model)
        with seeded(PICTURE_SEED, device):
            reconstructed = reconstruction_grid(model, valid_x[:RECONSTRUCTED], self.batch_size)
        self.writer.add_image("valid/samples", samples, step, dataformats="HWC")
        self.writer.add_image("valid/reconstructions", reconstructed, step, dataformats="HWC")


def kl_per_glimpse(output) -> list[float]:
    """DRAW's KL of each glimpse, averaged over the batch (nats); nothing for an output without one."""
    kl = getattr(output, "kl", None)  # DrawOutput.kl: (B, T)
    if not isinstance(kl, torch.Tensor) or kl.dim() != 2:
        return []
    return kl.detach().float().mean(0).tolist()


@contextmanager
def eval_mode(model):
    """The model in eval mode inside, in its own mode again after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def sample_grid(model):
    """SAMPLES images from the prior as a uint8 (H, W, 3) grid."""
    with eval_mode(model):
        return image_grid(model.generate(SAMPLES).cpu(), scale=2)


@torch.no_grad()
def reconstruction_grid(model, images: torch.Tensor, batch_size: int):
    """Each image beside sigmoid(c_T), as a uint8 (H, W, 3) grid.

    Batches of the training batch size (padded), as validation runs them: a compiled model sees no new shape.
    """
    canvases = [torch.sigmoid(model(x).canvas[:n]) for (x,), n in evaluation_batches(model, (images,), batch_size,
                                                                                   pad=True)]
    recon = torch.cat(canvases).cpu()
    return pairs(images.cpu(), recon, Style(scale=2, margin=0, levels=None), labels="input | reconstruction")


@contextmanager
def tensorboard_log(run_dir: Path, kind, batch_size: int, start_step: int):
    """A TensorBoardLog writing to RUN/tensorboard, closed (and so flushed) however training ends.

    ``purge_step``: the events an earlier session wrote after ``start_step`` (where this run
    continues from) are hidden, as this session writes those steps again.
    """
    writer = summary_writer_class()(log_dir=str(Path(run_dir) / FOLDER), purge_step=start_step + 1)
    try:
        yield TensorBoardLog(writer, kind, batch_size)
    finally:
        writer.close()


class NoLog:
    """What a run without --tensorboard (or a process other than the main one) logs to: nothing."""

    def training(self, record: dict, output) -> None:
        pass

    def validation(self, record: dict, model, valid) -> None:
        pass


def for_run(enabled: bool, main: bool, run_dir: Path, kind, batch_size: int, start_step: int):
    """The log a run writes to, as a context manager: TensorBoard's when enabled, on the main process only."""
    if enabled and main:
        return tensorboard_log(run_dir, kind, batch_size, start_step)
    return nullcontext(NoLog())
