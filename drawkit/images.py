"""Reading a picture file the user supplies (any size, grey or colour) into the model's image shape."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drawkit.errors import DrawkitError


def load_image(path, image_shape: tuple, invert: bool = False) -> torch.Tensor:
    """A PNG/JPEG/... file -> (C, H, W) float in [0, 1] for a model of ``image_shape`` (C, H, W).

    Transparent parts become black (MNIST-like data is light on dark); ``invert`` turns a
    dark-on-light drawing into light-on-dark. Resizing ignores the aspect ratio, as the model's
    images are all one size.
    """
    channels, height, width = image_shape
    path = Path(path).expanduser()
    if not path.exists():
        raise DrawkitError(f"--image {path} not found; pass a PNG or JPEG file")
    if not path.is_file():
        raise DrawkitError(f"--image {path} is not a file; pass a PNG or JPEG file")
    if channels not in (1, 3):
        raise DrawkitError(f"--image cannot be converted for this model: it takes {channels}-channel images, "
                           f"and only grey (1) or colour (3) can be made from a picture file")
    try:
        with Image.open(path) as opened:
            opened.seek(0)  # the first frame of an animation
            picture = opened.convert("RGBA")
    except Exception as exc:  # unknown format, truncated file, too large, unreadable: one message for all
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DrawkitError(f"--image {path} could not be read as a picture ({reason}); "
                           f"pass a PNG, JPEG, BMP or GIF file") from None
    black = Image.new("RGBA", picture.size, (0, 0, 0, 255))
    picture = Image.alpha_composite(black, picture).convert("L" if channels == 1 else "RGB")
    picture = picture.resize((width, height), Image.Resampling.LANCZOS if picture.width > width
                             else Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.float32) / 255                  # (H, W) or (H, W, 3)
    image = torch.from_numpy(array.reshape(height, width, channels).copy()).permute(2, 0, 1)  # (C, H, W)
    return 1 - image if invert else image
