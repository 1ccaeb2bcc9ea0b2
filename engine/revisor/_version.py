"""The engine's version: one literal, read by the build (pyproject) and at run time.

Kept out of importlib.metadata so that starting ``revisor`` does not pay for
scanning installed distributions.
"""

__version__ = "0.1.0"
