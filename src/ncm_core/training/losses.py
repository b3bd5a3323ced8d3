"""Regression losses on standardised targets (MAPE on the values in their units)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ncm_core.errors import NcmError
from ncm_core.training.config import LOSSES

__all__ = ["LOSSES", "mape", "regression_loss"]


def mape(pred: Any, true: Any) -> Any:
    """Mean absolute percentage error in %: ``100 * mean(|pred - true| / |true|)`` over all entries."""
    return 100.0 * ((pred - true).abs() / true.abs()).mean()


def regression_loss(name: str) -> Callable[[Any, Any, Any, Any], Any]:
    """``loss(z_pred, z_true, mean, std)`` on standardised values ``z`` (MAPE on values in their units)."""
    import torch.nn.functional as F

    if name == "mape":
        return lambda zp, zt, m, s: mape(zp * s + m, zt * s + m)
    if name == "mae":
        return lambda zp, zt, m, s: F.l1_loss(zp, zt)
    if name == "mse":
        return lambda zp, zt, m, s: F.mse_loss(zp, zt)
    if name == "huber":
        return lambda zp, zt, m, s: F.huber_loss(zp, zt, delta=1.0)
    raise NcmError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
