"""streamst: streaming speech translation."""

__version__ = "0.1.0"
