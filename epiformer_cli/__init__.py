"""epiformer: predict chromatin accessibility from DNA and conservation with the Epiformer model.

Importing this package is cheap (no torch): the heavy modules are imported by the functions that
need them, so ``epiformer --help`` stays fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
