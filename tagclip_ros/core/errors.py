"""Errors a user can fix, said as one sentence by the command line and the node.

They live apart from the modules that raise them (which import torch), so that the command
line can catch them without loading torch for a mistyped argument.
"""
from __future__ import annotations


class WeightsError(RuntimeError):
    """The model weights could not be found, read or downloaded."""


class CrfUnavailableError(RuntimeError):
    """The dense CRF binding is not installed."""
