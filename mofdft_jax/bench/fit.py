"""Scaling fits of wall time against electron count (spec §5.7, paper Fig. 4).

The paper fits t = (a N_e + b)^c + d (seconds) and reports c as the empirical exponent: 2.49 for
KS-DFT (PySCF, 32 CPU cores) and 1.46 for M-OFDFT (A100). :func:`fit_scaling` does the same with
``scipy.optimize.curve_fit`` and returns the exponent's standard error from the covariance; with
fewer than five points (four parameters) or an ill-conditioned fit it falls back to the two-
parameter power law t = (a N_e)^c (a straight line in log-log, d = b = 0) and says so.
:func:`predict` extrapolates with a band from the parameter covariance (Monte Carlo).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: The paper's fits (seconds, N_e electrons), spec §5.7.
PAPER_FITS = {
    "ksdft": {"a": 0.0240, "b": 0.69, "c": 2.49, "d": 9.81},
    "mofdft": {"a": 0.0701, "b": -7.71, "c": 1.46, "d": 7.21},
}


@dataclasses.dataclass(frozen=True)
class ScalingFit:
    """t = (a N_e + b)^c + d.

    Attributes:
      a, b, c, d: parameters (seconds).
      c_err: standard error of the exponent c.
      form: ``"(aN+b)^c+d"`` or ``"(aN)^c"`` (the fallback).
      cov: parameter covariance (4×4; zeros for the fixed b, d of the fallback).
      n_points: number of measurements.
      n_range: ``(min, max)`` electron counts measured.
    """

    a: float
    b: float
    c: float
    d: float
    c_err: float
    form: str
    cov: np.ndarray
    n_points: int
    n_range: tuple[float, float]

    def __call__(self, n_electrons):
        return scaling_model(np.asarray(n_electrons, dtype=float), self.a, self.b, self.c, self.d)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c, "d": self.d, "c_err": self.c_err,
                "form": self.form, "n_points": self.n_points,
                "n_min": self.n_range[0], "n_max": self.n_range[1]}


def scaling_model(n, a, b, c, d):
    """(a n + b)^c + d, with the base clipped at a tiny positive number (fit stability)."""
    return np.maximum(a * n + b, 1e-12) ** c + d


def loglog_slope(n_electrons, times) -> tuple[float, float]:
    """Slope of log t against log N_e and its standard error (least squares)."""
    x, y = np.log(np.asarray(n_electrons, float)), np.log(np.asarray(times, float))
    if len(x) < 2:
        return float("nan"), float("nan")
    if len(x) > 3:
        coef, cov = np.polyfit(x, y, 1, cov=True)
        return float(coef[0]), float(np.sqrt(cov[0, 0]))
    return float(np.polyfit(x, y, 1)[0]), float("nan")


def _power_law(n, times) -> ScalingFit:
    x, y = np.log(n), np.log(times)
    if len(x) >= 4:
        coef, cov_lin = np.polyfit(x, y, 1, cov=True)
        c_err = float(np.sqrt(cov_lin[0, 0]))
    else:
        coef, c_err = np.polyfit(x, y, 1), float("nan")
    c, intercept = float(coef[0]), float(coef[1])
    a = math.exp(intercept / c)  # (a n)^c = exp(c log a) n^c
    cov = np.zeros((4, 4))
    cov[2, 2] = c_err ** 2 if np.isfinite(c_err) else 0.0
    return ScalingFit(a=a, b=0.0, c=c, d=0.0, c_err=c_err, form="(aN)^c", cov=cov,
                      n_points=len(n), n_range=(float(n.min()), float(n.max())))


def fit_scaling(n_electrons, times) -> ScalingFit:
    """Fit t = (a N_e + b)^c + d to measured wall times (module docstring)."""
    from scipy.optimize import curve_fit

    n = np.asarray(n_electrons, dtype=float)
    t = np.asarray(times, dtype=float)
    order = np.argsort(n)
    n, t = n[order], t[order]
    if len(n) < 2:
        raise ValueError("a scaling fit needs at least two measurements")
    base = _power_law(n, t)
    if len(n) < 5:
        return base
    p0 = [base.a, 0.0, base.c, 0.0]
    try:
        params, cov = curve_fit(scaling_model, n, t, p0=p0, sigma=0.1 * t, absolute_sigma=False,
                                bounds=([0.0, -np.inf, 0.2, -np.inf],
                                        [np.inf, np.inf, 6.0, np.inf]),
                                maxfev=20000)
    except (RuntimeError, ValueError):
        return base
    if not np.all(np.isfinite(cov)) or cov[2, 2] <= 0:
        return base
    a, b, c, d = map(float, params)
    return ScalingFit(a=a, b=b, c=c, d=d, c_err=float(np.sqrt(cov[2, 2])),
                      form="(aN+b)^c+d", cov=cov, n_points=len(n),
                      n_range=(float(n.min()), float(n.max())))


def predict(fit: ScalingFit, n_electrons, *, samples: int = 4000, seed: int = 0):
    """``(t, t_lo, t_hi)``: the fitted time at ``n_electrons`` and a 68 % band from the parameter
    covariance (Monte Carlo over a multivariate normal; the band is only as good as the fit)."""
    n = np.atleast_1d(np.asarray(n_electrons, dtype=float))
    centre = fit(n)
    if not np.any(fit.cov):
        return centre, centre, centre
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_normal([fit.a, fit.b, fit.c, fit.d], fit.cov, size=samples,
                                    check_valid="ignore")
    vals = np.stack([scaling_model(n, *p) for p in draws])
    lo, hi = np.nanpercentile(vals, [16, 84], axis=0)
    return centre, lo, hi
