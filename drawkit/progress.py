"""A rich progress bar for training: steps/s, the bound in nats/image, ETA."""
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

stderr = Console(stderr=True)


class StepsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f} steps/s", style="cyan")


def training_progress(enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), StepsPerSecond(),
        TextColumn("{task.fields[loss]}"), TimeRemainingColumn(),
        console=stderr, disable=not enabled,
    )


@contextmanager
def counting_progress(description: str, total: int, enabled: bool = True):
    """A bar over ``total`` items; yields ``advance(n)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, disable=not enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
