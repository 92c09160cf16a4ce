"""The budget autopilot: fit a learning curve to validation accuracy against labels, forecast what the next labels
(or dollars) would add, and stop when that falls below what the user said a label is worth.

The curve is the inverse power law acc(n) = a - b * n^-c that learning curves of a fixed model follow (Mukherjee et
al. 2003; Figueroa et al. 2012), fitted by least squares to the rounds so far; a forecast needs MIN_POINTS rounds.
Validation accuracy over a few hundred documents moves in steps, so one forecast below the line is not enough: the
run stops after CONFIRM rounds in a row below it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdstudio.errors import KdError

RULE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*/\s*(usd|[0-9]+)\s*$", re.IGNORECASE)
MIN_POINTS = 5
CONFIRM = 2


@dataclass(frozen=True)
class GainRule:
    """Stop when the forecast gain falls below `threshold` per `per_labels` labels (or per US dollar when None)."""

    threshold: float
    per_labels: int | None

    @classmethod
    def parse(cls, text: str) -> GainRule:
        match = RULE.match(text)
        if not match or (match.group(2).isdigit() and int(match.group(2)) < 1):
            raise KdError(f"stop_when_gain_below {text!r} is not understood",
                          "write accuracy per labels or per dollar, e.g. 0.005/100 (half a point per 100 labels) "
                          "or 0.01/usd")
        per = match.group(2).lower()
        return cls(float(match.group(1)), None if per == "usd" else int(per))

    @property
    def unit(self) -> str:
        return "USD" if self.per_labels is None else f"{self.per_labels} labels"


def power_law(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(n, -c)


def fit_curve(labels: np.ndarray, accuracy: np.ndarray) -> tuple[float, float, float] | None:
    """(a, b, c) of the inverse power law through the points, or None when it cannot be fitted."""
    from scipy.optimize import curve_fit

    if len(labels) < MIN_POINTS or len(set(labels.tolist())) < MIN_POINTS:
        return None
    start = (min(1.0, accuracy.max() + 0.02), 1.0, 0.5)
    try:
        params, _ = curve_fit(power_law, labels.astype(float), accuracy.astype(float), p0=start,
                              bounds=([0.0, 0.0, 0.05], [1.0, 100.0, 3.0]), maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return float(params[0]), float(params[1]), float(params[2])


def forecast(rule: GainRule, labels: list[int], usd: list[float], accuracy: list[float]) -> dict[str, Any] | None:
    """The forecast gain per the rule's unit from the last round on, with the fitted curve; None before MIN_POINTS
    rounds (or when the curve cannot be fitted)."""
    curve = fit_curve(np.array(labels), np.array(accuracy))
    if curve is None:
        return None
    n = labels[-1]
    if rule.per_labels is not None:
        gain = float(power_law(np.array([n + rule.per_labels]), *curve)[0] - power_law(np.array([n]), *curve)[0])
    else:
        per_label = usd[-1] / n if n else 0.0
        step = float(power_law(np.array([n + 1.0]), *curve)[0] - power_law(np.array([float(n)]), *curve)[0])
        gain = math.inf if per_label <= 0 else step / per_label
    return {"gain": gain, "per": rule.unit, "ceiling": curve[0], "curve": list(curve)}


def should_stop(rule: GainRule, forecasts: list[dict[str, Any] | None]) -> str:
    """Why the autopilot stops (the last CONFIRM forecasts all below the rule), or ""."""
    recent = forecasts[-CONFIRM:]
    if len(recent) < CONFIRM or any(f is None or f["gain"] >= rule.threshold for f in recent):
        return ""
    last = recent[-1]
    return (f"autopilot: the next {last['per']} would add {100 * last['gain']:.2f} points of validation accuracy "
            f"(forecast), below {100 * rule.threshold:.2f}")
