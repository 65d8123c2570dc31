"""End-to-end M-OFDFT runs for the timing studies, including the large-system path (issue 8).

One run = everything after the geometry is known, as the paper times it (spec §5.7): the orbital
and density bases, the integrals, the adapter geometry of the learned functional, the initial
guess, and the 1000-step projected-gradient solve (compilation included, and reported
separately). Two ways to build the per-molecule data:

``dense``
    the small-molecule path of ``mofdft solve``: dense W̃ (``int2c2e``), dense overlap and its
    eigendecomposition for the natural reparametrisation (O(naux²) memory, O(naux³) set-up);
``large``
    never forms a naux × naux array: the compressed Coulomb operator (exact near field +
    multipole far field, :mod:`mofdft_jax.qchem.coulomb_blocks`), the local square root of the
    overlap (:mod:`mofdft_jax.density.local_root`), the external vector and the norm in
    O(naux · natm), no Hellmann–Feynman integrals in the bundle (forces, when asked for, are
    computed on the host in blocks of atoms).

The initial guess is the linear-cost per-element MINAO (``fastminao``, spec §4.3) plus the
ProjMINAO correction Δp of the functional's Δp head (evaluated and timed always; added only when
the functional is trained, ``apply_delta``). The learned functional is a grid-free target
(``txc``: solver energy E_θ + E_H + E_ext + E_nn; ``tot``: E_θ alone), or ``ts_res`` (E_θ + the
APBE kinetic and PBE XC terms on a quadrature grid of ``grid_level``, built with the integrals;
dense path only, as the paper runs it for ethanol and QM9). The result records wall and CPU time
of every stage, the peak resident memory of the process and the machine load.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from mofdft_jax.bench.measure import Timer, load_average, peak_rss_mb

def _log(record: dict, stage: str) -> None:
    """One progress line on stderr (``MOFDFT_BENCH_LOG`` collects them for long runs)."""
    print(f"[ofdft {record.get('molecule')}] {stage}: " + ", ".join(
        f"{k}={record[k]:.3g}" if isinstance(record.get(k), float) else f"{k}={record.get(k)}"
        for k in (f"{stage}_s", f"{stage}_cpu_s", "naux") if k in record)
        + f", rss={peak_rss_mb():.0f} MB, load={load_average():.1f}", file=sys.stderr, flush=True)


#: Above this many density-basis functions the ``auto`` mode takes the large-system path.
LARGE_NAUX = 8000


def fresh_functional(config: str = "small", target: str = "txc", seed: int = 0):
    """A freshly initialised learned functional (identity statistics): timings do not depend on
    the weights, so it stands in for a trained one where none exists (and the records say so)."""
    import jax

    from mofdft_jax.density.adapter import identity_statistics
    from mofdft_jax.model.functional import make_learned_functional
    from mofdft_jax.model.graphormer import make_config

    return make_learned_functional(make_config(config), identity_statistics(), target,
                                   key=jax.random.PRNGKey(seed))


def load_functional_spec(spec: str):
    """``(functional, description, trained)`` from ``fresh:CONFIG:TARGET`` or a checkpoint path."""
    if spec.startswith("fresh:"):
        _, config, target = (spec.split(":") + ["small", "txc"])[:3]
        return fresh_functional(config, target), f"untrained {config} ({target})", False
    from mofdft_jax.model.checkpoint import load_checkpoint

    functional, info = load_checkpoint(spec)
    return functional, f"checkpoint {spec} ({functional.target})", True


def build_large_bundle(mol, auxmol, *, coulomb_tol: float | None = None, stats: dict | None = None):
    """The grid-free :class:`~mofdft_jax.bundle.IntegralBundle` of a large molecule: compressed
    W̃, w, v_ext, no overlap, no Hellmann–Feynman integrals (module docstring)."""
    import jax

    from mofdft_jax.bundle import IntegralBundle
    from mofdft_jax.config import ensure_x64
    from mofdft_jax.qchem.basis import aux_function_atoms, aux_function_l
    from mofdft_jax.qchem.coulomb_blocks import DEFAULT_TOL, build_compressed_coulomb
    from mofdft_jax.qchem.integrals import compute_aux_norm, compute_v_ext

    ensure_x64()
    coulomb_stats: dict = {}
    coulomb = build_compressed_coulomb(auxmol, tol=coulomb_tol or DEFAULT_TOL,
                                       stats=coulomb_stats)
    put = jax.device_put
    bundle = IntegralBundle(
        coulomb=coulomb, norm=put(compute_aux_norm(auxmol)), v_ext=put(compute_v_ext(mol, auxmol)),
        n_electrons=put(np.float64(mol.nelectron)), e_nuc=put(np.float64(mol.energy_nuc())),
        atom_numbers=put(mol.atom_charges().astype(np.int64)),
        coords=put(mol.atom_coords()), aux_atom=put(aux_function_atoms(auxmol)),
        aux_l=put(aux_function_l(auxmol)), grid=None, hf_force=None, overlap=None)
    if stats is not None:
        stats.update({f"coulomb_{k}": v for k, v in coulomb_stats.items()})
    return bundle


def run_ofdft(molecule, functional_spec: str = "fresh:small:txc", *, steps: int = 1000,
              lr: float = 1e-3, mode: str = "auto", basis: str | None = None,
              radius: float | None = None, coulomb_tol: float | None = None,
              apply_delta: bool | None = None, with_forces: bool = False,
              profile: bool = False, grid_level: int = 2) -> dict:
    """Time one end-to-end M-OFDFT run of ``molecule`` (module docstring).

    Args:
      molecule: the :class:`~mofdft_jax.molecules.Molecule`.
      functional_spec: ``fresh:CONFIG:TARGET`` (untrained, for timing) or a checkpoint path.
      steps, lr: projected-gradient steps and step size (paper: 1000, 1e-3).
      mode: ``dense``, ``large`` or ``auto`` (large above :data:`LARGE_NAUX` functions).
      basis: orbital basis of the initial guess (default: the paper's 6-31G(2df,p)).
      radius: neighbourhood radius of the local overlap root (large mode), Bohr.
      coulomb_tol: near-field tolerance of the compressed Coulomb operator (large mode).
      apply_delta: add the Δp correction to the guess (default: only for trained functionals).
      with_forces: also compute the Hellmann–Feynman forces of the final density (host, blocked).
      profile: afterwards, time the dominant kernels of one step against the machine's roofline
        (:func:`mofdft_jax.bench.roofline.profile_step`; adds ``roofline`` and ``machine``).
      grid_level: PySCF grid level of a ``ts_res`` functional's grid terms (paper: 2).

    Returns:
      A flat dict: sizes, stage times (``*_s`` wall, ``*_cpu_s``), ``wall_s`` (total), peak
      memory, load, energy and solver status.
    """
    import jax

    from mofdft_jax.config import ensure_x64
    from mofdft_jax.qchem.basis import PAPER_BASIS, make_auxmol, make_mol
    from mofdft_jax.qchem.guesses import fastminao_guess
    from mofdft_jax.solver import progress_handler, solve
    from mofdft_jax.solver.learned import (make_learned_energy_fn, make_learned_inputs,
                                           projminao_delta)

    ensure_x64()
    record: dict = {"molecule": molecule.name, "n_atoms": int(len(molecule.numbers)),
                    "functional": functional_spec, "steps_requested": steps, "lr": lr,
                    "load_start": load_average()}
    functional, description, trained = load_functional_spec(functional_spec)
    needs_grid = functional.target == "ts_res"
    apply_delta = trained if apply_delta is None else apply_delta
    record.update({"functional_description": description, "trained": trained,
                   "target": functional.target, "model_config": functional.config.to_dict()})

    t_total = Timer().__enter__()
    with Timer() as t:
        mol = make_mol(molecule, basis or PAPER_BASIS)
        auxmol = make_auxmol(mol)
    naux = auxmol.nao_nr()
    large = mode == "large" or (mode == "auto" and naux > LARGE_NAUX)
    if large and needs_grid:
        raise ValueError("the large-system path is grid-free: use a txc or tot functional, or "
                         "mode 'dense' for ts_res")
    record.update({"n_electrons": int(mol.nelectron), "naux": int(naux),
                   "mode": "large" if large else "dense", "basis_s": t.wall_s})

    with Timer() as t:
        if large:
            bundle = build_large_bundle(mol, auxmol, coulomb_tol=coulomb_tol, stats=record)
        else:
            from mofdft_jax.qchem.integrals import build_integral_bundle

            bundle = build_integral_bundle(mol, auxmol,
                                           grid_level=grid_level if needs_grid else None,
                                           with_forces=False,
                                           with_overlap=functional.use_reparam)
    record.update({"integrals_s": t.wall_s, "integrals_cpu_s": t.cpu_s,
                   "grid_level": grid_level if needs_grid else None,
                   "n_grid_points": (int(np.count_nonzero(np.asarray(bundle.grid.weights)))
                                     if needs_grid else 0)})
    _log(record, "integrals")

    with Timer() as t:
        root = None
        if large and functional.use_reparam:
            from mofdft_jax.qchem.coulomb_blocks import build_local_overlap_root

            root_stats: dict = {}
            root = build_local_overlap_root(auxmol, radius=radius, stats=root_stats)
            record.update({f"overlap_root_{k}": v for k, v in root_stats.items()})
        geometry = functional.prepare(bundle, overlap_root=root)
        if not large:
            bundle = bundle._replace(overlap=None)  # only the eigendecomposition is needed now
    record.update({"geometry_s": t.wall_s, "geometry_cpu_s": t.cpu_s})
    _log(record, "geometry")

    with Timer() as t:
        guess = fastminao_guess(mol, auxmol)
        p0 = np.asarray(guess.coeffs)
        delta = np.asarray(projminao_delta(functional, p0, bundle, geometry))
        if apply_delta:
            p0 = p0 + delta
    record.update({"guess_s": t.wall_s, "guess_cpu_s": t.cpu_s, "init": "fastminao+delta"
                   if apply_delta else "fastminao (delta evaluated, not applied: untrained)",
                   "delta_norm": float(np.linalg.norm(delta))})
    _log(record, "guess")

    energy_terms_fn = make_learned_energy_fn(functional)
    inputs = make_learned_inputs(functional, bundle, geometry)
    stamps: list[tuple[int, float]] = []
    def on_progress(step, energy, pgn):
        stamps.append((step, time.perf_counter()))
        if step % 100 == 0:
            print(f"[ofdft {record['molecule']}] step {step}: E={energy:.8f} |Pg|={pgn:.2e} "
                  f"load={load_average():.1f}", file=sys.stderr, flush=True)

    with Timer() as t, progress_handler(on_progress):
        t_solve0 = time.perf_counter()
        result = solve(energy_terms_fn, p0, inputs, steps=steps, lr=lr, max_rise=np.inf)
    record.update({"solve_s": t.wall_s, "solve_cpu_s": t.cpu_s, "n_steps": int(result.n_steps),
                   "solver_status": result.status, "energy_ha": float(result.energy),
                   "energy_initial_ha": float(result.trajectory.energy[0]),
                   "energy_final_ha": float(result.energy_final),
                   "electron_count_error": float(np.abs(result.trajectory.n_electrons
                                                        - mol.nelectron).max())})
    _log(record, "solve")
    # a run that stopped early (divergence) evaluated fewer steps: not a valid timing
    record["status"] = "ok" if result.n_steps == steps else "incomplete"
    if len(stamps) >= 2:
        (s0, w0), (s1, w1) = stamps[0], stamps[-1]
        per_step = (w1 - w0) / max(s1 - s0, 1)
        record.update({"compile_s": w0 - t_solve0 - per_step, "step_ms": 1e3 * per_step})
    if with_forces:
        from mofdft_jax.qchem.integrals import hf_forces

        with Timer() as t:
            forces = hf_forces(result.coeffs, mol, auxmol)
        record.update({"forces_s": t.wall_s, "max_force": float(np.abs(forces).max())})
    t_total.__exit__(None, None, None)
    record.update({"wall_s": t_total.wall_s, "cpu_s": t_total.cpu_s,
                   "peak_rss_mb": peak_rss_mb(), "load_end": load_average(),
                   "devices": [str(d) for d in jax.devices()]})
    if profile:
        from mofdft_jax.bench.roofline import measure_machine, profile_step

        machine = measure_machine()
        record["machine"] = machine
        record["roofline"] = profile_step(functional, inputs, result.coeffs, machine)
    return record
