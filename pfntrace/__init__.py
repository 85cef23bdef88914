"""pfntrace: see what write faults on a DAX mount really do."""

__version__ = "0.1.0"
