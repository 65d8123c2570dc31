"""Scaling fits of wall time against electron count (spec §5.7, paper Fig. 4).

The paper fits t = (a N_e + b)^c + d (seconds) and reports c as the empirical exponent: 2.49 for
KS-DFT (PySCF, 32 CPU cores) and 1.46 for M-OFDFT (A100). :func:`fit_scaling` does the same with
``scipy.optimize.curve_fit`` and returns the exponent's uncertainty as the larger of the
covariance standard error and the half-width of its profile-likelihood interval (68 %, F test):
when the times grow almost linearly over the measured range, (aN + b)^c + d is degenerate (a, b
grow without bound while c slides to its bound) and the covariance at the optimum understates the
freedom of c — the profile does not (cpu preset, M-OFDFT 10-190 electrons: c = 0.22 ± 0.06 by
the covariance; the profile interval reaches the bound c = 0.2, so c_err = inf). With fewer than
five points (four parameters) or an ill-conditioned fit it falls back to the two-parameter power
law t = (a N_e)^c (a straight line in log-log, d = b = 0) and says so.
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
      c_err: uncertainty of the exponent c: the larger of its covariance standard error and the
        half-width of its 68 % profile-likelihood interval (``inf`` when that interval reaches a
        bound of c, i.e. the measurements do not determine the exponent).
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


#: Bounds of the exponent c in the four-parameter fit.
_C_BOUNDS = (0.2, 6.0)


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
                                bounds=([0.0, -np.inf, _C_BOUNDS[0], -np.inf],
                                        [np.inf, np.inf, _C_BOUNDS[1], np.inf]),
                                maxfev=20000)
    except (RuntimeError, ValueError):
        return base
    if not np.all(np.isfinite(cov)) or cov[2, 2] <= 0:
        return base
    a, b, c, d = map(float, params)
    c_err = max(float(np.sqrt(cov[2, 2])), profile_exponent_halfwidth(n, t, params, _C_BOUNDS))
    return ScalingFit(a=a, b=b, c=c, d=d, c_err=c_err,
                      form="(aN+b)^c+d", cov=cov, n_points=len(n),
                      n_range=(float(n.min()), float(n.max())))


def _weighted_ss(n, t, a, b, c, d) -> float:
    return float(np.sum(((scaling_model(n, a, b, c, d) - t) / (0.1 * t)) ** 2))


def profile_exponent_halfwidth(n, t, params, c_bounds=_C_BOUNDS, *, level: float = 0.6827,
                               step: float = 0.05) -> float:
    """Half-width of the profile-likelihood interval of c in t = (aN + b)^c + d.

    Walking from the best c in steps of ``step`` towards each bound, the other three parameters
    are refitted at fixed c (same 10 % relative weights as the fit, warm-started from the
    previous c); c is inside the interval while the weighted residual sum
    S(c) ≤ S_min (1 + F_{1,ν}(level)/ν), ν = n − 4 (the F test of one constrained parameter with
    the variance estimated from the residuals), the crossing interpolated linearly in S. Returns
    ``max(c_hi − c, c − c_lo)``, or ``inf`` when the interval reaches a bound (the data do not
    determine c) or ν < 1.
    """
    import warnings

    from scipy.optimize import curve_fit
    from scipy.stats import f as f_dist

    dof = len(n) - 4
    if dof < 1:
        return float("inf")
    a0, b0, c_best, d0 = map(float, params)
    s_min = _weighted_ss(n, t, a0, b0, c_best, d0)
    limit = s_min * (1.0 + f_dist.ppf(level, 1, dof) / dof)
    ends = []
    for bound in c_bounds:
        start, c, end, ss_in = (a0, b0, d0), c_best, None, s_min
        while end is None:
            c = float(np.clip(c + np.sign(bound - c_best) * step, *sorted((c_best, bound))))
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    p, _ = curve_fit(lambda x, a, b, d, c=c: scaling_model(x, a, b, c, d), n, t,
                                     p0=start, sigma=0.1 * t, maxfev=2000,
                                     bounds=([0.0, -np.inf, -np.inf], [np.inf, np.inf, np.inf]))
                ss = _weighted_ss(n, t, p[0], p[1], c, p[2])
            except (RuntimeError, ValueError):
                ss = np.inf
            if ss > limit:  # crossed between the previous c and this one: interpolate S
                frac = (limit - ss_in) / (ss - ss_in) if np.isfinite(ss) else 1.0
                end = c - np.sign(bound - c_best) * step * (1.0 - frac)
            elif c == bound:
                return float("inf")
            else:
                start, ss_in = tuple(p), ss
        ends.append(end)
    return float(max(c_best - ends[0], ends[1] - c_best))


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
