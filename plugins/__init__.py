"""drawkit's built-in plugins, registered through the ``drawkit`` entry-point group like any other."""
