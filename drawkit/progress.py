"""A rich progress bar for training: steps/s, the bound in nats/image, ETA."""
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
