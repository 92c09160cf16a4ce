"""How good is a student really: estimates with 95% intervals from a few labels people checked.

The sample alone gives an unbiased estimate (Wilson's interval for a share, a bootstrap for macro F1).
Prediction-powered inference (PPI++, Angelopoulos, Duchi and Zrnic 2023) tightens it with the teacher's labels on
many more documents: the teacher's belief that the student is right (its probability for the student's answer) is
measured where it is cheap (documents the teacher labelled at random, never trained on) and corrected by the
rectifier measured where people checked, with the weight on the cheap part tuned to the data (its power-tuning λ), so
that the interval stays valid however wrong the teacher is (asymptotically: its interval is the normal one, given
from 100 checked documents, kdstudio.check.PPI_MIN_CHECKED) and is never wider than the sample's alone by more than
the noise of estimating λ."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95% interval, and what it rests on: `truth` is who gave the reference labels (people or
    gold), `n` how many of them, `method` how the interval was made, `n_proxy` how many teacher-labelled documents
    PPI borrowed (0 for the sample alone)."""

    value: float
    low: float
    high: float
    n: int
    truth: str
    method: str
    n_proxy: int = 0

    @property
    def width(self) -> float:
        return self.high - self.low

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        borrowed = f", with {self.n_proxy} teacher labels" if self.n_proxy else ""
        return (f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.n} {self.truth} labels, "
                f"{self.method}{borrowed})")


def wilson(successes: int, n: int, truth: str, z: float = Z95) -> Estimate:
    """A share with Wilson's score interval: honest at the extremes (0 of 30 is not [0, 0]) and at small n."""
    if n <= 0:
        raise ValueError("an estimate needs at least one checked label")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, truth, "sample (Wilson)")


def ppi_mean(y: np.ndarray, f_checked: np.ndarray, f_unchecked: np.ndarray, truth: str,
             z: float = Z95) -> Estimate:
    """PPI++ for a mean: `y` what people's labels say on the n checked documents (e.g. 1 where the student is right),
    `f_checked` the cheap proxy on the same documents (the teacher's probability for the student's answer),
    `f_unchecked` the proxy on N other documents drawn from the same population. θ = mean(y) + λ (mean(f_N) -
    mean(f_n)), with λ chosen to minimise the variance and clipped to [0, 1]; the interval is the CLT one of that
    estimator."""
    y, fn, fN = (np.asarray(a, dtype=float) for a in (y, f_checked, f_unchecked))
    n, big_n = len(y), len(fN)
    if n < 2 or big_n < 2 or len(fn) != n:
        raise ValueError("PPI needs the proxy on every checked document and on at least two others")
    var_f = float(np.var(np.concatenate([fn, fN]), ddof=1))
    cov = float(np.cov(y, fn, ddof=1)[0, 1])
    lam = 0.0 if var_f <= 0 else min(1.0, max(0.0, cov / ((1 + n / big_n) * var_f)))
    value = float(y.mean() + lam * (fN.mean() - fn.mean()))
    variance = lam * lam * float(np.var(fN, ddof=1)) / big_n + float(np.var(y - lam * fn, ddof=1)) / n
    half = z * math.sqrt(max(variance, 0.0))
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), n, truth, f"PPI++ (λ {lam:.2f})", big_n)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the labels that occur in the truth or the predictions (scikit-learn's default)."""
    present = np.union1d(y_true, y_pred)
    scores = []
    for k in present:
        tp = np.sum((y_pred == k) & (y_true == k))
        fp = np.sum((y_pred == k) & (y_true != k))
        fn = np.sum((y_pred != k) & (y_true == k))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def bootstrap_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, truth: str, *, reps: int = 1000,
                       seed: int = 0) -> Estimate:
    """Macro F1 on the checked sample, with a percentile bootstrap interval (F1 has no closed-form one)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if n <= 0:
        raise ValueError("an estimate needs at least one checked label")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(reps, n))
    values = np.array([macro_f1(y_true[d], y_pred[d]) for d in draws])
    low, high = np.quantile(values, [0.025, 0.975])
    return Estimate(macro_f1(y_true, y_pred), float(low), float(high), n, truth, "sample (bootstrap)")
