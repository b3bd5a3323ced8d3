"""What a training run returns, for classifiers and regressors alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """The bundle written, the epoch it keeps and the run's history.

    ``metric`` is the validation metric recorded for the kept epoch (``val_accuracy`` for
    classifiers, ``val_mape`` for regressors); ``best_value`` is NaN when there was no validation
    data (then the last epoch is kept).
    """

    bundle: Path
    best_epoch: int
    best_value: float
    metric: str = "val_accuracy"
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0  # epochs taken from a checkpoint
    baselines: dict[str, Any] | None = None  # regressors with a validation split: the baselines' report

    @property
    def validated(self) -> bool:
        """Whether a validation set picked the kept epoch (False: it is the last epoch)."""
        return not math.isnan(self.best_value)

    @property
    def best_val_accuracy(self) -> float:
        """Validation accuracy of the kept epoch (classifiers; NaN otherwise)."""
        return self.best_value if self.metric == "val_accuracy" else float("nan")

    @property
    def best_val_mape(self) -> float:
        """Validation MAPE in % of the kept epoch (regressors; NaN otherwise)."""
        return self.best_value if self.metric == "val_mape" else float("nan")


#: Regression runs return the same type (the name is kept for callers).
RegressResult = TrainResult
