"""Isolated measurements: every timed run in its own Python process.

A fresh process per run makes the peak memory (``ru_maxrss`` of that process) and the wall time
belong to that run alone, lets a run be cut off at a time limit, and keeps one method's caches
(PySCF, XLA) from helping the other. :func:`run_isolated` starts
``python -m mofdft_jax.bench.worker JOB_JSON`` and reads the one JSON result line it prints.

Every record also carries the machine load (1-minute load average before and after, and the CPU
time of the run against its wall time): the 2-core CI machine is shared, and a run measured under
load says so.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

RESULT_PREFIX = "BENCH_RESULT "


def load_average() -> float:
    """The 1-minute load average (NaN where unavailable)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timer:
    """Wall and CPU (this process, all threads) time of a block: ``.wall_s``, ``.cpu_s``."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self._w
        self.cpu_s = time.process_time() - self._c
        return False


def run_isolated(job: dict, *, timeout_s: float | None = None, threads: int | None = None,
                 env: dict | None = None) -> dict:
    """Run one benchmark job (see :mod:`mofdft_jax.bench.worker`) in a fresh process.

    Args:
      job: the job description (``{"kind": "ks" | "ofdft" | ..., ...}``).
      timeout_s: kill the run after this many seconds; the record then has ``status = "timeout"``
        and ``wall_s`` = the limit (a lower bound of the true time).
      threads: ``OMP_NUM_THREADS`` / BLAS threads of the run (default: all cores).

    With ``MOFDFT_BENCH_LOG=FILE`` in the environment the workers' stderr (progress lines) is
    appended to FILE instead of being captured.

    Returns:
      The worker's result dict plus ``process_wall_s`` (including the Python start-up and imports),
      ``load_before``/``load_after`` and ``status`` (``ok``, ``timeout`` or ``error``).
    """
    run_env = dict(os.environ)
    if threads is not None:
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            run_env[key] = str(threads)
    run_env.setdefault("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", ""))
    if not run_env["JAX_PLATFORMS"]:
        run_env.pop("JAX_PLATFORMS")
    run_env.update(env or {})
    load_before = load_average()
    t0 = time.perf_counter()
    log_path = os.environ.get("MOFDFT_BENCH_LOG")  # stream the workers' progress lines here
    log = open(log_path, "a") if log_path else None
    try:
        proc = subprocess.run([sys.executable, "-m", "mofdft_jax.bench.worker", json.dumps(job)],
                              stdout=subprocess.PIPE, stderr=log or subprocess.PIPE, text=True,
                              timeout=timeout_s, env=run_env)
    except subprocess.TimeoutExpired:
        if log:
            log.close()
        return {**job, "status": "timeout", "wall_s": float(timeout_s),
                "process_wall_s": time.perf_counter() - t0, "load_before": load_before,
                "load_after": load_average(),
                "message": f"killed after {timeout_s:.0f} s (the time is a lower bound)"}
    wall = time.perf_counter() - t0
    if log:
        log.close()
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
    if proc.returncode != 0 or result is None:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        return {**job, "status": "error", "process_wall_s": wall, "load_before": load_before,
                "load_after": load_average(),
                "message": f"exit {proc.returncode}: " + " | ".join(tail)}
    return {**result, "status": result.get("status", "ok"), "process_wall_s": wall,
            "load_before": load_before, "load_after": load_average()}
