"""The hooks a drawkit plugin may implement. Each receives a ``register`` callable."""
import pluggy

hookspec = pluggy.HookspecMarker("drawkit")


@hookspec
def register_encoders(register):
    """Register encoders: ``register(name, factory, description=...)``."""


@hookspec
def register_attention(register):
    """Register attention mechanisms: ``register(name, factory, description=...)``."""


@hookspec
def register_datasets(register):
    """Register datasets: ``register(name, factory, description=...)``."""


@hookspec
def register_commands(cli):
    """Add commands to the ``drawkit`` Typer app."""
