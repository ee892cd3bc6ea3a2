"""Small statistics helpers shared by methods (numpy; take numpy arrays or CPU tensors)."""
from __future__ import annotations

import numpy as np


def spearman(a, b) -> float:
    """Spearman rank correlation of two 1-D samples of continuous values (no ties expected): the
    Pearson correlation of their ranks."""
    ra = np.argsort(np.argsort(np.asarray(a))).astype(float)
    rb = np.argsort(np.argsort(np.asarray(b))).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])
