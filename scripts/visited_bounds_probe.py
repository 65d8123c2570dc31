"""Probe of issue 19: the label-free bounds (mofdft_jax.train.losses.visited_bound_violations) along a
precond-lbfgs minimisation from ProjMINAO with a learned checkpoint, on test conformers of a labelled
dataset. Usage: python scripts/visited_bounds_probe.py CHECKPOINT DATASET N OUT.json"""
import sys, json, numpy as np, jax, jax.numpy as jnp
import mofdft_jax; mofdft_jax.enable_x64()
from mofdft_jax.commands.learned_solve import load_functional, learned_energy_fn
from mofdft_jax.data.loader import open_dataset
from mofdft_jax.data.splits import make_splits
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.qchem.guesses import initial_guess
from mofdft_jax.qchem.settings import PAPER_SETTINGS
from mofdft_jax.solver import solve
from mofdft_jax.solver.energy import sum_terms
from mofdft_jax.solver.learned import make_learned_inputs
from mofdft_jax.train.losses import make_visited_bounds, visited_bound_violations
from mofdft_jax.units import HARTREE_TO_KCAL as K
from mofdft_jax.workflows.landscape import coulomb_distance
ckpt, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
functional, info = load_functional(ckpt)
ds = open_dataset(data); files = make_splits(ds)["test"][:n]
rows = []
for file in files:
    labels = ds.read(file); st = labels.settings
    mol = make_mol(labels.molecule, st["basis"]); auxmol = make_auxmol(mol)
    bundle = build_integral_bundle(mol, auxmol, grid_level=int(st["grid_level"]), with_forces=False, with_overlap=True)
    inputs = make_learned_inputs(functional, bundle, functional.prepare(bundle))
    efn = learned_energy_fn(functional, "pbe")
    def parts(p, inputs):
        t = efn(p, inputs); learned = functional.energy(p, inputs.bundle, inputs.geometry, features=inputs.features)
        return jnp.stack([learned, sum_terms(t) - learned, t["kinetic"] - learned])
    vg = jax.jit(jax.jacrev(parts)); val = jax.jit(parts)
    e_ks = float(labels.ks_energy["e_tot"]); p_star = jnp.asarray(labels.p_ref)
    guess = initial_guess("projminao", mol, auxmol, settings=PAPER_SETTINGS.replace(basis=st["basis"], grid_level=int(st["grid_level"])), functional=functional, bundle=bundle, geometry=inputs.geometry)
    res = solve(efn, guess.coeffs, inputs, steps=300, optimizer="precond-lbfgs", gtol=1e-4, store_coeffs=True)
    traj = res.trajectory.coeffs; nst = len(traj)
    v_star = np.asarray(val(p_star, inputs))
    t_star = e_ks - v_star[1]
    idx = sorted(set([0, 1, 2, 4, 8, 16, 32, 64, 128, nst - 1]) & set(range(nst)))
    for i in idx:
        p = jnp.asarray(traj[i]); v = np.asarray(val(p, inputs)); J = np.asarray(vg(p, inputs))
        b = make_visited_bounds(label_star=t_star, rest_star=v_star[1], rest_visited=v[1], grad_rest_visited=J[1], base_star=v_star[2], base_visited=v[2], grad_base_visited=J[2], coeffs_visited=p, coeffs_star=p_star)
        viol = np.asarray(visited_bound_violations(K * v[0], K * J[0] @ (p - p_star), b))
        rows.append(dict(file=file, step=i, e_err_kcal=K * (v[0] + v[1] - e_ks), dist=coulomb_distance(np.asarray(p), np.asarray(p_star), np.asarray(bundle.coulomb)), var=float(viol[0]), desc=float(viol[1]), conv=float(viol[2])))
        print(json.dumps(rows[-1]), flush=True)
    print(file, res.status, res.n_steps, flush=True)
json.dump(rows, open(sys.argv[4], "w"), indent=1)
