"""The hooks a drawkit plugin may implement. Each receives a ``register`` callable.

A plugin's function must carry ``@drawkit.hookimpl`` and one of these names exactly; drawkit
reports, at start-up and in ``drawkit plugins``, a marked function with another name, a function
named like a hook without the mark, and a plugin that registers nothing.
"""
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
