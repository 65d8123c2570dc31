"""Density quality (spec §5.2, Results 2.2): dipole moments and Hirshfeld charges of the optimised
densities against KS, M-OFDFT vs TF+1/9vW; radial densities around C and O against KS
and APBE.

All densities are expansions in the density basis, ρ_p(r) = Σ_μ p_μ ω_μ(r):

* **KS**: the fitted KS reference density p* stored with the labels (spec §1.5);
* **M-OFDFT**: the reported density of the learned ``ts_res`` functional from ProjMINAO;
* **classical**: TF+1/9vW and APBE (PBE XC) from MINAO, same protocol (spec §4.3–§4.5).

These are the same solves as :mod:`reproduce.accuracy_in_scale` (same dataset, model and settings),
so with a shared cache they are read back instead of recomputed.

Properties (host quadrature on a PySCF Becke grid of level ``grid_level``):

* dipole μ = Σ_A Z_A R_A − ∫ρ(r) r dr (a.u. → Debye); errors are reported both as the norm of the
  vector difference |μ − μ_KS| (used for the claims: it also sees a wrong direction) and as the
  difference of magnitudes ||μ| − |μ_KS||; the paper does not say which it used;
* Hirshfeld charges q_A = Z_A − ∫ w_A ρ, w_A = ρ⁰_A / Σ_B ρ⁰_B, with free-atom densities ρ⁰ from
  PySCF's spherically averaged, spin-restricted PBE atoms (``pyscf.scf.atom_ks.get_atm_nrks``,
  fractional occupations of the open shells, the labels' orbital basis) — the paper does not state
  its free-atom densities; the MAE runs over all atoms of all test molecules;
* radial density ρ̄_A(r) = (1/4π)∮ρ(R_A + r Ω) dΩ (110-point Lebedev average) around the O atom
  and the C atom bonded to it, plotted as 4πr²ρ̄(r) so the shell structure is visible.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from reproduce import pipeline as pl
from reproduce.accuracy_in_scale import learned_name, prepare_system
from reproduce.common import apply_plot_style, claims_frame, describe_hardware, markdown_table

EXPERIMENT = "density_quality"
#: Results 2.2 (ethanol test set, n = 10,000): charge MAE (e), dipole MAE (D).
PAPER = {"M-OFDFT": (0.00192, 0.0180), "TF+1/9vW": (0.155, 0.985)}
CLAIMS = {"M-OFDFT": ("ethanol_charge_mae", "ethanol_dipole_mae"),
          "TF+1/9vW": ("ethanol_charge_mae_tf19vw", "ethanol_dipole_mae_tf19vw")}
KS = "KS"
POINT_CHUNK = 20000


# -------------------------------------------------------------------------------------------------
# host quadrature of density properties


def make_property_grid(mol, level: int):
    """``(coords (ngrid, 3), weights (ngrid,))`` of a PySCF Becke grid of ``level`` (Bohr)."""
    from pyscf.dft import gen_grid

    grids = gen_grid.Grids(mol)
    grids.level = int(level)
    grids.build(with_non0tab=False)
    return np.asarray(grids.coords), np.asarray(grids.weights)


def density_on_points(auxmol, coeffs: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """ρ_p at ``coords`` (``(npts,)``), evaluated in chunks of :data:`POINT_CHUNK` points."""
    out = np.empty(len(coords))
    for i in range(0, len(coords), POINT_CHUNK):
        ao = auxmol.eval_gto("GTOval_sph", coords[i:i + POINT_CHUNK])
        out[i:i + POINT_CHUNK] = ao @ coeffs
    return out


def free_atom_density_matrices(mol) -> dict:
    """``{element symbol: (nao_atom, nao_atom) density matrix}`` of the spherically averaged,
    spin-restricted PBE free atoms in ``mol``'s orbital basis."""
    from pyscf.scf import atom_ks

    out = {}
    for symbol, (_e, _eps, c, occ) in atom_ks.get_atm_nrks(mol, xc="pbe").items():
        out[symbol] = (c * occ) @ c.T
    return out


def promolecule_densities(mol, coords: np.ndarray, atom_dms: dict) -> np.ndarray:
    """``(natm, npts)`` free-atom densities ρ⁰_A placed at each nucleus."""
    slices = mol.aoslice_by_atom()
    out = np.empty((mol.natm, len(coords)))
    for i in range(0, len(coords), POINT_CHUNK):
        ao = mol.eval_gto("GTOval_sph", coords[i:i + POINT_CHUNK])
        for a in range(mol.natm):
            p0, p1 = slices[a, 2], slices[a, 3]
            dm = atom_dms[mol.atom_pure_symbol(a)]
            aoa = ao[:, p0:p1]
            out[a, i:i + POINT_CHUNK] = np.einsum("gi,ij,gj->g", aoa, dm, aoa)
    return out


def dipole_moment(mol, rho: np.ndarray, coords: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(3,)`` dipole in atomic units: Σ_A Z_A R_A − Σ_g w_g ρ_g r_g."""
    nuclear = mol.atom_charges() @ mol.atom_coords()
    return nuclear - (weights * rho) @ coords


def hirshfeld_charges(mol, rho: np.ndarray, weights: np.ndarray,
                      promolecule: np.ndarray) -> np.ndarray:
    """``(natm,)`` Hirshfeld charges Z_A − Σ_g w_g (ρ⁰_A/Σ_B ρ⁰_B)_g ρ_g."""
    total = promolecule.sum(axis=0)
    share = np.divide(promolecule, total, out=np.zeros_like(promolecule), where=total > 1e-30)
    return mol.atom_charges() - share @ (weights * rho)


def radial_average(auxmol, coeffs: np.ndarray, center: np.ndarray, radii: np.ndarray,
                   n_angular: int = 110) -> np.ndarray:
    """Spherical average of ρ_p on shells of ``radii`` (Bohr) around ``center``."""
    from pyscf.dft import gen_grid

    ang = gen_grid.MakeAngularGrid(n_angular)
    dirs, w = ang[:, :3], ang[:, 3] / ang[:, 3].sum()
    pts = center[None, None, :] + radii[:, None, None] * dirs[None, :, :]
    rho = density_on_points(auxmol, coeffs, pts.reshape(-1, 3)).reshape(len(radii), -1)
    return rho @ w


def radial_atoms(mol) -> dict:
    """``{"O": index, "C": index}``: the first O atom and the C atom closest to it."""
    symbols = [mol.atom_pure_symbol(a) for a in range(mol.natm)]
    out = {}
    if "O" in symbols:
        o = symbols.index("O")
        out["O"] = o
        cs = [a for a, s in enumerate(symbols) if s == "C"]
        if cs:
            d = np.linalg.norm(mol.atom_coords()[cs] - mol.atom_coords()[o], axis=1)
            out["C"] = cs[int(np.argmin(d))]
    elif "C" in symbols:
        out["C"] = symbols.index("C")
    return out


def molecule_properties(labels, label_settings: dict, densities: dict, *, grid_level: int,
                        atom_dms_cache: dict):
    """Dipoles and Hirshfeld charges of every density of one molecule.

    Returns:
      ``(rows, mol, auxmol)`` with one row per (density, atom) carrying ``charge`` and the
      molecule's ``dipole_x/y/z_debye`` (same for all atoms of a density).
    """
    from mofdft_jax.qchem.basis import make_auxmol, make_mol
    from mofdft_jax.units import AU_TO_DEBYE

    mol = make_mol(labels.molecule, label_settings["basis"])
    auxmol = make_auxmol(mol)
    coords, weights = make_property_grid(mol, grid_level)
    key = label_settings["basis"]
    if key not in atom_dms_cache:
        atom_dms_cache[key] = {}
    missing = {mol.atom_pure_symbol(a) for a in range(mol.natm)} - set(atom_dms_cache[key])
    if missing:
        atom_dms_cache[key].update(free_atom_density_matrices(mol))
    promolecule = promolecule_densities(mol, coords, atom_dms_cache[key])
    rows = []
    for name, p in densities.items():
        rho = density_on_points(auxmol, np.asarray(p), coords)
        dip = dipole_moment(mol, rho, coords, weights) * AU_TO_DEBYE
        q = hirshfeld_charges(mol, rho, weights, promolecule)
        for a in range(mol.natm):
            rows.append({"density": name, "atom": a, "element": mol.atom_pure_symbol(a),
                         "charge": float(q[a]), "electrons": float(weights @ rho),
                         "dipole_x_debye": float(dip[0]), "dipole_y_debye": float(dip[1]),
                         "dipole_z_debye": float(dip[2])})
    return rows, mol, auxmol


# -------------------------------------------------------------------------------------------------
# tables


def compare_to_ks(props: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-molecule dipole errors and per-atom charge errors against the KS density.

    Returns:
      ``(per_molecule, summary)``: per (molecule, density) the dipole error norm and magnitude
      error (D) and the molecule's charge MAE (e); per density the MAEs over all molecules/atoms.
    """
    ks = props[props["density"] == KS].set_index(["file", "atom"])
    per_mol, charge_err = [], []
    for (file, density), g in props[props["density"] != KS].groupby(["file", "density"],
                                                                     sort=False):
        g = g.set_index(["file", "atom"])
        ref = ks.loc[g.index]
        dq = np.abs(g["charge"].to_numpy() - ref["charge"].to_numpy())
        cols = ["dipole_x_debye", "dipole_y_debye", "dipole_z_debye"]
        mu, mu_ks = g[cols].iloc[0].to_numpy(), ref[cols].iloc[0].to_numpy()
        per_mol.append({"file": file, "molecule": g["molecule"].iloc[0], "density": density,
                        "dipole_debye": float(np.linalg.norm(mu)),
                        "dipole_ks_debye": float(np.linalg.norm(mu_ks)),
                        "dipole_error_norm_debye": float(np.linalg.norm(mu - mu_ks)),
                        "dipole_magnitude_error_debye": float(abs(np.linalg.norm(mu)
                                                                  - np.linalg.norm(mu_ks))),
                        "charge_mae_e": float(dq.mean()), "n_atoms": len(dq)})
        charge_err += [{"density": density, "abs_error": x} for x in dq]
    per_mol = pd.DataFrame(per_mol)
    charges = pd.DataFrame(charge_err)
    rows = []
    for density, g in per_mol.groupby("density", sort=False):
        c = charges[charges["density"] == density]["abs_error"]
        c_mae, c_ci = pl.mean_ci95(c)
        d_mae, d_ci = pl.mean_ci95(g["dipole_error_norm_debye"])
        paper = PAPER.get(density, (np.nan, np.nan))
        rows.append({"density": density, "n_molecules": len(g), "n_atoms": len(c),
                     "charge_mae_e": c_mae, "charge_mae_ci95": c_ci, "paper_charge_mae_e": paper[0],
                     "dipole_mae_debye": d_mae, "dipole_mae_ci95": d_ci,
                     "dipole_magnitude_mae_debye": float(g["dipole_magnitude_error_debye"].mean()),
                     "paper_dipole_mae_debye": paper[1]})
    return per_mol, pd.DataFrame(rows)


def make_radial_figure(radial: pd.DataFrame, molecule: str):
    """4πr²ρ̄(r) around O and C for each density (Results 2.2: KS shell structure)."""
    plt = apply_plot_style()
    atoms = list(dict.fromkeys(radial["atom_label"]))
    fig, axes = plt.subplots(1, len(atoms), figsize=(5 * len(atoms), 3.8), squeeze=False)
    styles = {KS: dict(color="black", lw=2.0)}
    for ax, atom in zip(axes[0], atoms):
        for density, g in radial[radial["atom_label"] == atom].groupby("density", sort=False):
            ax.plot(g["r_bohr"], 4 * np.pi * g["r_bohr"] ** 2 * g["rho"], label=density,
                    **styles.get(density, dict(lw=1.3)))
        ax.set_xlabel("r (Bohr)")
        ax.set_ylabel("4πr²ρ̄(r) (e/Bohr)")
        ax.set_title(f"around {atom} of {molecule}")
    axes[0][-1].legend()
    return fig


# -------------------------------------------------------------------------------------------------
# experiment


def run(ctx):
    """Run the experiment at ``ctx.preset`` and write ``ctx.out_dir/density_quality``."""
    t0, cpu0 = time.perf_counter(), pl.cpu_seconds()
    config = pl.load_experiment_config(EXPERIMENT, ctx.preset)
    steps, rule = int(config["steps"]), str(config.get("rule", "iid"))
    scfg = config["ethanol"]
    data, files, reference, checkpoints = prepare_system(ctx, "ethanol", scfg, ["ts_res"])
    files = files[: int(config.get("max_eval", len(files)))]
    learned = pl.learned_method(checkpoints["ts_res"], learned_name("ts_res"))
    runs = [pl.Run(learned, config.get("learned_init", "projminao"))]
    runs += [pl.Run(pl.classical_method(k, lr=scfg.get("classical_lr")),
                    config.get("classical_init", "minao")) for k in config["classical"]]
    radial_file = reference if reference is not None else files[0]
    eval_files = files + ([radial_file] if radial_file not in files else [])
    ev = pl.evaluate(data, eval_files, runs, steps=steps, rule=rule, cache_dir=ctx.preset_cache,
                     refresh=ctx.force, progress=ctx.progress)
    name_of = {r.method.name: ("M-OFDFT" if r.method.learned else r.method.name) for r in runs}

    dataset = data.open()
    props, radial, atom_dms = [], [], {}
    radii = np.linspace(0.0, float(config.get("radial_max_bohr", 4.0)),
                        int(config.get("radial_points", 161)))[1:]
    for file in eval_files:
        labels = dataset.read(file)
        densities = {KS: labels.p_ref}
        for run in runs:
            densities[name_of[run.method.name]] = ev.coeffs[(run.method.name, run.init, file)]
        rows, mol, auxmol = molecule_properties(labels, data.label_settings, densities,
                                                grid_level=int(config["grid_level"]),
                                                atom_dms_cache=atom_dms)
        role = "test" if file in files else "reference"
        props += [{"file": file, "molecule": labels.molecule.name, "role": role, **r}
                  for r in rows]
        if file == radial_file:
            wanted = set(config.get("radial_densities", [KS, "M-OFDFT", "APBE"]))
            for atom_label, a in radial_atoms(mol).items():
                for density, p in densities.items():
                    if density not in wanted:
                        continue
                    rho = radial_average(auxmol, np.asarray(p), mol.atom_coord(a), radii)
                    radial += [{"molecule": labels.molecule.name, "atom_label": atom_label,
                                "atom": a, "density": density, "r_bohr": float(r),
                                "rho": float(v)} for r, v in zip(radii, rho)]
    props = pd.DataFrame(props)
    per_mol, summary = compare_to_ks(props[props["role"] == "test"])
    radial = pd.DataFrame(radial)

    origin = "shipped" if checkpoints["ts_res"].shipped else "trained here"
    workload = (pl.describe_workload(data, len(files), steps=steps)
                + f"; model: {checkpoints['ts_res'].label} ({origin}); "
                f"properties on a level-{config['grid_level']} Becke grid")
    hardware = describe_hardware()
    claim_rows = []
    for r in summary.itertuples(index=False):
        if r.density not in CLAIMS:
            continue
        cq, cd = CLAIMS[r.density]
        common = {"n": int(r.n_molecules), "scale": "reduced", "kind": "measured",
                  "workload": workload, "hardware": hardware, "preset": ctx.preset}
        claim_rows.append({"claim_id": cq, "value": r.charge_mae_e, **common,
                           "n": int(r.n_atoms),
                           "note": "Hirshfeld with spherically averaged PBE free atoms; MAE over "
                                   "all atoms"})
        claim_rows.append({"claim_id": cd, "value": r.dipole_mae_debye, **common,
                           "note": "MAE of |mu - mu_KS| (vector difference); magnitude-only MAE "
                                   f"{r.dipole_magnitude_mae_debye:.4g} D"})
    claims = claims_frame(claim_rows)

    figures = {}
    if len(radial):
        figures["radial_density"] = make_radial_figure(radial, str(radial["molecule"].iloc[0]))
    intro = "\n".join([
        "Density quality (spec §5.2, Results 2.2). Dipoles and Hirshfeld charges of the reported "
        "OFDFT densities against the fitted KS density p*; M-OFDFT (learned ts_res from "
        "ProjMINAO) vs the classical functionals (MINAO start, PBE XC).",
        "",
        f"Workload: {workload}.",
        "",
        "Free-atom densities for Hirshfeld: spherically averaged restricted PBE atoms "
        "(`pyscf.scf.atom_ks.get_atm_nrks`) in the labels' orbital basis. Dipole error: norm of "
        "the vector difference (magnitude-only MAE in the summary).",
        "",
        "## Summary (paper: Results 2.2, MD17 ethanol test set)",
        "",
        markdown_table(summary),
        "",
    ])
    path = pl.finish_experiment(ctx, EXPERIMENT, config, t0=t0, cpu0=cpu0,
                                table=per_mol, claims=claims,
                                data_fingerprints={"ethanol_dataset": data.fingerprint,
                                                   "ethanol_ts_res_weights":
                                                       checkpoints["ts_res"].weights_sha256},
                                intro=intro, figures=figures)
    summary.to_csv(path / "summary.csv", index=False)
    props.to_csv(path / "charges.csv", index=False)
    radial.to_csv(path / "radial.csv", index=False)
    return path
