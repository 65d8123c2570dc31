"""Host layer: timing harness of M-OFDFT against KS-DFT on the same machine (issue 8, spec §5.7).

* :mod:`.systems` — the molecules of the size series and the proteins, by spec string, cached;
* :mod:`.measure` — one run per process (:func:`run_isolated`): wall and CPU time, peak memory,
  load average, time limits;
* :mod:`.worker` — the jobs a measurement process runs (KS-DFT at the paper's settings, an
  end-to-end M-OFDFT solve, the machine's roofline numbers);
* :mod:`.ofdft` — the end-to-end M-OFDFT run, with the large-system path (compressed Coulomb
  operator, local overlap root, fast per-element MINAO) that fits ~700-atom proteins in 24 GiB;
* :mod:`.fit` — t = (a N_e + b)^c + d fits with exponent uncertainties, extrapolation bands;
* :mod:`.roofline` — memory bandwidth / DGEMM rate and the per-step kernels against them.

The reproduction experiments ``scaling`` and ``protein_speedup`` (``reproduce/``) drive it.
"""

from mofdft_jax.bench.fit import PAPER_FITS, ScalingFit, fit_scaling, loglog_slope, predict
from mofdft_jax.bench.measure import Timer, load_average, peak_rss_mb, run_isolated
from mofdft_jax.bench.systems import build_system, cached_system, size_series, system_file

__all__ = ["PAPER_FITS", "ScalingFit", "Timer", "build_system", "cached_system", "fit_scaling",
           "load_average", "loglog_slope", "peak_rss_mb", "predict", "run_isolated",
           "size_series", "system_file"]
