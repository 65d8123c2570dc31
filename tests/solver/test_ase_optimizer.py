"""The ASE calculator takes the solver's optimiser (issue 17): ``optimizer="precond-lbfgs"``
converges the density of water APBE+PBE at grid level 1 to the minimum found by
tests/solver/test_optimizers.py, the warm start after a small displacement needs fewer steps, and
an unknown name is refused up front."""

import numpy as np
import pytest

from mofdft_jax.ase_calculator import MOFDFTCalculator, atoms_from_molecule
from mofdft_jax.molecules import Molecule
from mofdft_jax.units import HARTREE_TO_EV

WATER = ([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])


def test_calculator_with_preconditioned_lbfgs():
    atoms = atoms_from_molecule(Molecule.from_angstrom(*WATER, name="water"))
    calc = MOFDFTCalculator("apbe", basis="sto-3g", grid_level=1, optimizer="precond-lbfgs",
                            gtol=1e-6, steps=300)
    assert (calc.lr, calc.rule, calc.stop_at_gtol) == (1.0, "last", True)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    cold = calc.solve_log[-1]
    assert cold["optimizer"] == "precond-lbfgs" and cold["status"] == "converged"
    assert cold["n_steps"] == cold["converged_step"] < 60
    assert energy / HARTREE_TO_EV == pytest.approx(-85.0065981038, abs=1e-6)
    assert np.all(np.isfinite(atoms.get_forces()))
    atoms.positions[1, 1] += 0.01
    atoms.get_potential_energy()
    warm = calc.solve_log[-1]
    assert warm["start"] == "warm" and warm["status"] == "converged"
    assert warm["n_steps"] < cold["n_steps"]


def test_calculator_refuses_unknown_optimizer():
    with pytest.raises(ValueError, match="choose one of sgd"):
        MOFDFTCalculator("apbe", optimizer="bfgs")


def test_calculator_default_is_the_paper_protocol():
    calc = MOFDFTCalculator("apbe")
    assert (calc.optimizer, calc.lr, calc.rule, calc.stop_at_gtol) == ("sgd", 1e-3, "iid", False)
