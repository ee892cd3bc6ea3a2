"""Small statistics helpers shared by methods (numpy; take numpy arrays or CPU tensors)."""
from __future__ import annotations

import numpy as np


def average_ranks(x) -> np.ndarray:
    """0-based ranks of a 1-D sample; tied values share the mean of the ranks they occupy."""
    values, inverse, counts = np.unique(np.asarray(x, dtype=float).ravel(), return_inverse=True,
                                        return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2.0)[inverse.ravel()]


def spearman(a, b) -> float:
    """Spearman rank correlation of two 1-D samples: the Pearson correlation of their average ranks
    (ties share a rank, so the value does not depend on the order of the samples)."""
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])
