"""Energy composition (spec §4.1, §3.4): terms, fused grid pass, plug-in functionals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mofdft_jax import functionals
from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.guesses import minao_guess
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.solver import make_energy_fn, solve

WATER_ANGSTROM = [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]


@pytest.fixture(scope="module")
def water():
    mol = make_mol(Molecule.from_angstrom([8, 1, 1], WATER_ANGSTROM, name="water"), "sto-3g")
    auxmol = make_auxmol(mol)
    bundle = build_integral_bundle(mol, auxmol, grid_level=0, with_forces=False,
                                   with_overlap=False)
    return mol, bundle, jnp.asarray(minao_guess(mol, auxmol).coeffs)


def test_terms_are_the_functional_terms(water):
    mol, bundle, p = water
    terms_fn, energy_fn = make_energy_fn("tf+1/9vw", xc="pbe")
    assert list(terms_fn(p, bundle)) == ["kinetic", "hartree", "xc", "external", "nuclear"]
    terms = jax.jit(terms_fn)(p, bundle)
    expected = {
        "kinetic": functionals.tf_ninth_vw_energy(p, bundle),
        "hartree": functionals.hartree_energy(p, bundle),
        "xc": functionals.pbe_xc_energy(p, bundle),
        "external": functionals.external_energy(p, bundle),
        "nuclear": mol.energy_nuc(),
    }
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(float(value), rel=1e-12, abs=1e-12), name
    assert float(energy_fn(p, bundle)) == pytest.approx(sum(float(v) for v in expected.values()),
                                                        rel=1e-13)


def test_fused_grid_pass_equals_separate_terms(water):
    """Named kinetic + XC use one pass over the grid; the same callables passed as functions use
    two. Values and gradients agree to rounding."""
    _, bundle, p = water
    _, fused = make_energy_fn("apbe", xc="pbe")
    _, separate = make_energy_fn(functionals.apbe_energy, xc=functionals.pbe_xc_energy)
    e1, g1 = jax.value_and_grad(fused)(p, bundle)
    e2, g2 = jax.value_and_grad(separate)(p, bundle)
    assert float(e1) == pytest.approx(float(e2), rel=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)


def test_memoised_so_the_solver_does_not_recompile():
    a = make_energy_fn("tf", xc="lda")
    b = make_energy_fn("tf", xc="lda")
    assert a[0] is b[0] and a[1] is b[1]
    assert make_energy_fn("tf", xc="pbe")[1] is not a[1]


def test_learned_functional_plugs_in_as_a_term(water):
    """A 'txc' model returns T_S + E_XC (xc=None); a 'tot' model is the whole energy function."""
    mol, bundle, p = water

    def txc_model(coeffs, b):  # stands in for a network: any differentiable callable
        return functionals.thomas_fermi_energy(coeffs, b) + functionals.lda_xc_energy(coeffs, b)

    terms_fn, energy_fn = make_energy_fn(txc_model, xc=None)
    terms = terms_fn(p, bundle)
    assert list(terms) == ["kinetic", "hartree", "external", "nuclear"]
    _, reference = make_energy_fn("tf", xc="lda")
    assert float(energy_fn(p, bundle)) == pytest.approx(float(reference(p, bundle)), rel=1e-13)

    def tot_model(coeffs, b):
        return reference(coeffs, b)

    res_tot = solve(tot_model, p, bundle, steps=3, lr=1e-3)
    res_ref = solve(reference, p, bundle, steps=3, lr=1e-3)
    np.testing.assert_allclose(res_tot.trajectory.energy, res_ref.trajectory.energy, rtol=1e-13)
    assert res_tot.terms == {}  # a scalar energy function records no terms


def test_include_and_errors(water):
    _, bundle, p = water
    terms_fn, _ = make_energy_fn(None, include=("hartree", "external"), nuclear=False)
    terms = terms_fn(p, bundle)
    assert list(terms) == ["hartree", "external"]
    with pytest.raises(ValueError, match="unknown kinetic functional"):
        make_energy_fn("tf+2vw")
    with pytest.raises(ValueError, match="unknown XC functional"):
        make_energy_fn("tf", xc="b3lyp")
    with pytest.raises(ValueError, match="unknown energy terms"):
        make_energy_fn("tf", include=("kinetic", "coulomb"))
