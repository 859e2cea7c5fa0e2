"""Per-sample training losses: DSM, DiffCLF (binary and multi-class), CtSM, and their combinations.

Every loss is called as ``loss(model, batch, generator)`` with ``batch`` a tuple of data tensors
(``(x0,)`` for diffusions, ``(x0, x1)`` for interpolants) and returns a dict of per-sample tensors
``(B,)``: ``"loss"`` (what the trainer averages and differentiates) plus named components for logging.
"""
from boltzclf.losses.ctsm import TimeScoreMatching
from boltzclf.losses.diffclf import DiffusiveClassification, classification_loss
from boltzclf.losses.dsm import DenoisingScoreMatching
from boltzclf.losses.factory import LossConfig, build_loss

__all__ = [
    "DenoisingScoreMatching",
    "DiffusiveClassification",
    "LossConfig",
    "TimeScoreMatching",
    "build_loss",
    "classification_loss",
]
