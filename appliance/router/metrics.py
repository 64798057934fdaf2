"""Binary routing metrics shared by training and scoring: cloud is the positive class."""

from __future__ import annotations

from collections.abc import Sequence


def binary_report(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float]:
    """Balanced accuracy, cloud precision/recall and the confusion counts (True = cloud)."""
    tp = sum(1 for t, p in zip(truth, pred, strict=True) if t and p)
    fp = sum(1 for t, p in zip(truth, pred, strict=True) if not t and p)
    fn = sum(1 for t, p in zip(truth, pred, strict=True) if t and not p)
    tn = sum(1 for t, p in zip(truth, pred, strict=True) if not t and not p)
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "balanced_accuracy": (recall + specificity) / 2,
        "cloud_precision": tp / (tp + fp) if tp + fp else 0.0,
        "cloud_recall": recall,
        "local_recall": specificity,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }
