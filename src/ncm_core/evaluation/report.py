"""What a user must know about a trained classifier: per-class recall and the confusion matrix of
held-out frames (each frame decided by its crops' mean probability), and how steady validation was.

A validation curve that jumps between epochs means the best epoch was picked by luck: the report
gives the spread of validation accuracy over the last epochs and one warning line when it moved by
more than :data:`SPREAD_WARNING` between two of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: a move of validation accuracy between two of the last epochs above this is warned about (10 points)
SPREAD_WARNING = 0.10
#: the last epochs whose validation accuracy the spread is measured over
SPREAD_EPOCHS = 3


def validation_spread(
    history: list[dict[str, Any]], last: int = SPREAD_EPOCHS, key: str = "val_accuracy"
) -> dict[str, Any] | None:
    """The validation accuracy of the last ``last`` epochs, its range (``spread``, max - min), the largest
    move between consecutive epochs (``largest_move``) and ``warning`` (one line, or None). None without
    validation."""
    vals = [float(h[key]) for h in history if key in h and h[key] is not None]
    if not vals:
        return None
    tail = vals[-last:]
    first = len(vals) - len(tail) + 1
    moves = np.abs(np.diff(tail)) if len(tail) > 1 else np.zeros(1)
    worst = int(moves.argmax())
    warning = None
    if moves[worst] > SPREAD_WARNING:
        warning = (
            f"validation accuracy moved by {100 * moves[worst]:.0f} points between epochs {first + worst} and "
            f"{first + worst + 1} ({tail[worst]:.1%} -> {tail[worst + 1]:.1%}): the best epoch is a matter of "
            "luck; use more held-out frames, the 'generalise' recipe or a lower learning rate"
        )
    return {
        "epochs": list(range(first, len(vals) + 1)),
        "val_accuracy": tail,
        "spread": float(max(tail) - min(tail)),
        "largest_move": float(moves[worst]),
        "warning": warning,
    }


def spread_text(spread: dict[str, Any] | None) -> str | None:
    """One line: the range of validation accuracy over the last epochs."""
    if not spread:
        return None
    e = spread["epochs"]
    return (
        f"validation accuracy over epochs {e[0]}-{e[-1]}: {min(spread['val_accuracy']):.1%} to "
        f"{max(spread['val_accuracy']):.1%} (spread {100 * spread['spread']:.1f} points)"
    )


def frame_report(probs: np.ndarray, y: np.ndarray, sources: list[str], class_names: list[str]) -> dict[str, Any]:
    """Crop- and frame-level metrics of held-out frames from their crops' probabilities ``(n, classes)``:
    each frame's class is the argmax of its crops' mean probability (not a vote). ``frames`` holds
    accuracy, per-class recall and the confusion matrix (:func:`classification_metrics`)."""
    from ncm_core.evaluation.evaluate import classification_metrics

    y = np.asarray(y)
    order = list(dict.fromkeys(sources))
    src = np.asarray(sources)
    f_true = np.array([y[src == s][0] for s in order])
    f_pred = np.array([probs[src == s].mean(0).argmax() for s in order])
    crops = classification_metrics(y, probs.argmax(1), class_names)
    frames = classification_metrics(f_true, f_pred, class_names)
    return {
        "crop_accuracy": crops["accuracy"],
        "frames": frames,
        "per_class_recall": {n: v["recall"] for n, v in frames["per_class"].items() if v["support"]},
    }


def recall_text(per_class_recall: dict[str, float]) -> str:
    """``class recall, ...`` on one line (lowest first: the classes to look at)."""
    items = sorted(per_class_recall.items(), key=lambda kv: kv[1])
    return ", ".join(f"{n} {r:.0%}" for n, r in items)
