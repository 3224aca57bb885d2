"""KEY=VALUE options (--dataset-opt, --encoder-opt, --attention-opt) as dicts, shared by the CLI and bench."""
import json
from typing import Optional

from drawkit.errors import DrawkitError


def parse_options(pairs: Optional[list[str]], option: str) -> dict:
    """KEY=VALUE pairs; VALUE is read as JSON when it parses (3, 0.5, [5, 3], true), else kept as text."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DrawkitError(f"{option} expects KEY=VALUE, got '{pair}'")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def dataset_options(pairs: Optional[list[str]], image_size: Optional[int], grayscale: Optional[bool]) -> dict:
    """The keywords a dataset factory gets from --dataset-opt, --image-size and --grayscale."""
    options = parse_options(pairs, "--dataset-opt")
    if image_size is not None:
        options["image_size"] = image_size
    if grayscale:
        options["grayscale"] = True
    return options
