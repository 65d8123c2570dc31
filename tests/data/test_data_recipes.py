"""Recipes and molecule sources: shipped recipes resolve, curated lists are chemically right,
presets merge, user-data loaders read synthetic files (nothing is downloaded), errors name files."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mofdft_jax.data import sources
from mofdft_jax.data.recipes import datasets_dir, load_recipe, recipe_tasks
from mofdft_jax.molecules import InputError, Molecule
from mofdft_jax.units import HA_PER_BOHR_TO_KCAL_PER_ANGSTROM, HARTREE_TO_KCAL

SHIPPED = sorted(p.stem for p in datasets_dir().glob("*.toml"))


def test_every_shipped_recipe_has_a_card_and_valid_settings():
    assert {"smoke", "ethanol_thermal", "small_molecules", "size_series", "chignolin_fragments",
            "proteins", "qm9", "qm9_c7h10o2", "qmugs", "qmugs_bin1"} <= set(SHIPPED)
    for name in SHIPPED:
        base = load_recipe(name)
        assert base.card is not None and base.card.is_file(), f"{name}: card missing"
        presets = [p for p in ("quick", "cpu", "paper") if _has_preset(name, p)]
        assert "paper" in presets, name
        for preset in presets:
            recipe = load_recipe(name, preset)
            settings = recipe.label_settings()  # unknown keys would raise
            assert recipe.source["kind"] in sources.source_kinds()
            if preset == "paper":
                assert (settings.basis, settings.grid_level) == ("6-31G(2df,p)", 2)
            fractions = recipe.splits.get("fractions", [0.8, 0.1, 0.1])
            assert abs(sum(fractions) - 1.0) < 1e-12


def _has_preset(name, preset):
    try:
        load_recipe(name, preset)
    except InputError:
        return False
    return True


def test_small_molecule_list_is_chemically_consistent():
    from rdkit import Chem
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    rows = sources.read_csv_rows(datasets_dir() / "small_molecules.csv")
    assert len(rows) >= 140
    assert len({r["name"] for r in rows}) == len(rows)
    assert len({Chem.CanonSmiles(r["smiles"]) for r in rows}) == len(rows)  # no duplicates
    for row in rows:
        mol = Chem.MolFromSmiles(row["smiles"])
        assert mol is not None, row
        assert CalcMolFormula(mol) == row["isomer_group"], row  # group = true formula
        assert mol.GetNumHeavyAtoms() <= 6, row
        assert {a.GetSymbol() for a in Chem.AddHs(mol).GetAtoms()} <= set("HCNOF"), row
        assert Chem.GetFormalCharge(mol) == 0 and \
            sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms()) == 0, row
    groups = Counter(r["isomer_group"] for r in rows)
    multi = {g: n for g, n in groups.items() if n >= 2}
    assert len(multi) >= 30 and sum(multi.values()) >= 120  # many isomer pairs
    assert groups["C4H10O"] == 7 and groups["C6H14"] == 5  # complete isomer sets


def test_size_series_list_grows_by_one_heavy_atom_per_member():
    rows = sources.read_csv_rows(datasets_dir() / "size_series.csv")
    for family in ("linear_alkane", "linear_alcohol"):
        counts = [sources.heavy_atom_count_smiles(r["smiles"]) for r in rows
                  if r["family"] == family]
        assert counts == list(range(counts[0], counts[0] + len(counts)))
    assert max(sources.heavy_atom_count_smiles(r["smiles"]) for r in rows) >= 12


def test_quick_recipes_resolve_to_deterministic_molecules():
    recipe = load_recipe("ethanol_thermal", "quick")
    a, b = recipe_tasks(recipe), recipe_tasks(recipe)
    assert len(a) == recipe.source["count"] + 1  # + the minimum (relative-energy reference)
    assert a[0].meta["conformer_id"] == -1 and a[1].meta["conformer_id"] == 0
    for x, y in zip(a, b):
        assert x.file == y.file
        np.testing.assert_array_equal(x.molecule.coords_bohr, y.molecule.coords_bohr)
    assert all(t.molecule.formula == "C2H6O" for t in a)
    spread = np.std([t.molecule.coords_bohr for t in a[1:]], axis=0).mean()
    assert 0.02 < spread < 0.5  # thermal distortions at 500 K, not copies or explosions

    small = recipe_tasks(load_recipe("small_molecules", "quick"))
    groups = Counter(t.meta["isomer_group"] for t in small)
    assert all(n >= 2 for n in groups.values())
    assert all(t.molecule.n_heavy <= 3 for t in small)


def test_preset_merge_and_kind_replacement(tmp_path):
    quick = load_recipe("ethanol_thermal", "quick")
    paper = load_recipe("ethanol_thermal", "paper")
    assert quick.source["kind"] == "thermal_conformers" and quick.source["smiles"] == "CCO"
    assert paper.source["kind"] == "md17_npz" and "smiles" not in paper.source  # replaced
    assert quick.labels == {"basis": "6-31G", "grid_level": 1}


def test_recipe_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[source]\nkind = "inline"\nmolecules = []\n[labels]\nbasiss = 1\n')
    with pytest.raises(InputError, match=r"bad\.toml: \[labels\] unknown setting 'basiss'"):
        load_recipe(bad).label_settings()
    with pytest.raises(InputError, match=r"bad\.toml: no preset 'cpu'"):
        load_recipe(bad, "cpu")
    bad.write_text("name = \n")
    with pytest.raises(InputError, match=r"bad\.toml: invalid TOML"):
        load_recipe(bad)
    with pytest.raises(InputError, match=r"nonexistent: no such recipe file or shipped recipe"):
        load_recipe("nonexistent")
    bad.write_text('[source]\nkind = "inline"\nmolecules = [{name = "a", xyz = "Li 0 0 0"}]\n')
    with pytest.raises(InputError, match=r"molecule 'a' line 1: element 'Li' is not supported"):
        recipe_tasks(load_recipe(bad))
    bad.write_text('[source]\nkind = "teleport"\n')
    with pytest.raises(InputError, match=r"bad\.toml: \[source\] unknown kind 'teleport'"):
        recipe_tasks(load_recipe(bad))


def test_missing_user_download_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MOFDFT_DATA", str(tmp_path))
    with pytest.raises(InputError, match=r"md17_ethanol\.npz: not found\. MD17 ethanol: http"):
        recipe_tasks(load_recipe("ethanol_thermal", "paper"))
    with pytest.raises(InputError, match=r"dsgdb9nsd\.xyz\.tar\.bz2: not found\. QM9: https"):
        recipe_tasks(load_recipe("qm9"))
    with pytest.raises(InputError, match=r"structures\.tar\.gz: not found\. QMugs: https"):
        recipe_tasks(load_recipe("qmugs"))
    monkeypatch.delenv("MOFDFT_DATA")
    with pytest.raises(InputError, match="environment variable not set"):
        recipe_tasks(load_recipe("qm9"))


def _ethanol_angstrom():
    return (np.array([6, 6, 8, 1, 1, 1, 1, 1, 1]),
            np.array([[-0.0010, 0.0153, 0.0000], [1.5063, -0.0044, 0.0000],
                      [1.9426, 1.3347, 0.0000], [-0.3798, -1.0124, 0.0000],
                      [-0.3818, 0.5261, 0.8887], [-0.3818, 0.5261, -0.8887],
                      [1.8793, -0.5248, 0.8873], [1.8793, -0.5248, -0.8873],
                      [2.8930, 1.3203, 0.0000]]))


def test_md17_loader_draws_a_seeded_subset_with_references(tmp_path):
    z, x = _ethanol_angstrom()
    rng = np.random.default_rng(0)
    frames = x[None] + 0.02 * rng.standard_normal((50, 9, 3))
    energy_kcal = -97000.0 + rng.standard_normal(50)
    forces_kcal = rng.standard_normal((50, 9, 3))
    path = tmp_path / "md17_ethanol.npz"
    np.savez(path, R=frames, z=z, E=energy_kcal[:, None], F=forces_kcal)
    assert sources.npz_frame_count(path) == 50
    params = {"kind": "md17_npz", "path": str(path), "count": 7, "seed": 3, "name": "md17_ethanol"}
    out = sources.load_source(params, base_dir=tmp_path)
    again = sources.load_source(params, base_dir=tmp_path)
    ids = [meta["conformer_id"] for _, meta in out]
    assert len(ids) == 7 and ids == sorted(ids) and ids == [m["conformer_id"] for _, m in again]
    for mol, meta in out:
        i = meta["conformer_id"]
        assert mol.name == f"md17_ethanol_{i:06d}"
        np.testing.assert_allclose(mol.coords_angstrom, frames[i], atol=1e-12)
        assert mol.energy_ref == pytest.approx(energy_kcal[i] / HARTREE_TO_KCAL, rel=1e-14)
        np.testing.assert_allclose(mol.forces_ref, forces_kcal[i] / HA_PER_BOHR_TO_KCAL_PER_ANGSTROM,
                                   rtol=1e-14)


def _qm9_text(index: int, numbers, coords, smiles: str) -> str:
    sym = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
    props = " ".join(["1.0"] * 15)
    atoms = "\n".join(f"{sym[int(z)]}\t{c[0]:.6f}\t{c[1]:.6f}\t{c[2]:.6f}\t0.0"
                      for z, c in zip(numbers, coords))
    return (f"{len(numbers)}\ngdb {index}\t{props}\n{atoms}\n100.0\t200.0\n{smiles}\t{smiles}\n"
            f"InChI=1S/x\tInChI=1S/x\n")


def test_qm9_loader_reads_a_tarball_and_filters_by_formula(tmp_path):
    z, x = _ethanol_angstrom()
    water_z = np.array([8, 1, 1])
    water_x = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
    folder = tmp_path / "xyz"
    folder.mkdir()
    (folder / "dsgdb9nsd_000001.xyz").write_text(_qm9_text(1, water_z, water_x, "O"))
    (folder / "dsgdb9nsd_000002.xyz").write_text(_qm9_text(2, z, x, "CCO"))
    (folder / "dsgdb9nsd_000003.xyz").write_text(_qm9_text(3, z, x[[2, 1, 0, 3, 4, 5, 6, 7, 8]]
                                                           * 1.0, "COC"))
    archive = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        for f in sorted(folder.iterdir()):
            tar.add(f, arcname=f.name)
    for path in (folder, archive):
        everything = sources.load_source({"kind": "qm9", "path": str(path)}, base_dir=tmp_path)
        assert [m.name for m, _ in everything] == ["qm9_000001", "qm9_000002", "qm9_000003"]
        isomers = sources.load_source({"kind": "qm9", "path": str(path), "formula": "C2H6O"},
                                      base_dir=tmp_path)
        assert [meta["isomer_group"] for _, meta in isomers] == ["C2H6O", "C2H6O"]
        np.testing.assert_allclose(isomers[0][0].coords_angstrom, x, atol=1e-6)


def test_qmugs_loader_bins_by_heavy_atoms_and_skips_other_elements(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    root = tmp_path / "structures"
    smiles = {"CHEMBL1": "CCCCCCCCCCO", "CHEMBL2": "CCCCCCCCCCCCCCCCO", "CHEMBL3": "CCCCCCCCCCS",
              "CHEMBL4": "CCCCCCCCCCCCCCCCCO", "CHEMBL5": "CCO"}
    for key, smi in smiles.items():
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=1)
        (root / key).mkdir(parents=True)
        Chem.MolToMolFile(mol, str(root / key / "conf_00.sdf"))
        Chem.MolToMolFile(mol, str(root / key / "conf_01.sdf"))
    archive = tmp_path / "structures.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="structures")
    params = {"kind": "qmugs", "path": str(archive), "min_heavy": 10, "max_heavy": 100,
              "per_bin": 1, "seed": 0}
    out = sources.load_source(params, base_dir=tmp_path)
    bins = [meta["heavy_bin"] for _, meta in out]
    assert bins == ["<=15", "16-20"]  # S-containing and too-small molecules skipped, 1 per bin
    assert out[0][0].n_heavy == 11 and out[1][0].n_heavy in (17, 18)
    assert sources.qmugs_bin(16) == "16-20" and sources.qmugs_bin(100) == "96-100"


def test_inline_and_xyz_sources(tmp_path):
    from mofdft_jax.molecules import write_xyz

    z, x = _ethanol_angstrom()
    frames = [Molecule.from_angstrom(z, x + 0.01 * i, name=f"f{i}") for i in range(5)]
    write_xyz(tmp_path / "traj.xyz", frames)
    out = sources.load_source({"kind": "xyz", "path": "traj.xyz", "count": 3, "seed": 1},
                              base_dir=tmp_path)
    assert len(out) == 3 and all(m.name.startswith("traj_") for m, _ in out)
    for mol, meta in out:
        np.testing.assert_allclose(mol.coords_angstrom, x + 0.01 * meta["frame"], atol=1e-6)
    dup = {"kind": "inline", "molecules": [{"name": "a", "xyz": "H 0 0 0\nH 0 0 0.74"},
                                           {"name": "a", "xyz": "H 0 0 0\nH 0 0 0.75"}]}
    with pytest.raises(InputError, match="molecule name 'a' appears twice"):
        sources.load_source(dup, base_dir=Path("."))
    same = {"kind": "inline", "molecules": [{"name": "a", "xyz": "H 0 0 0\nH 0 0 0.74"},
                                            {"name": "b", "xyz": "H 0 0 0\nH 0 0 0.74"}]}
    with pytest.raises(InputError, match="molecules 'a' and 'b' have identical geometries"):
        sources.load_source(same, base_dir=Path("."))


def test_chignolin_fragment_structures_are_distinct_and_capped():
    tasks = recipe_tasks(load_recipe("chignolin_fragments", "quick"))
    assert [t.meta["fragment"] for t in tasks[::2]] == ["D", "P", "E", "T", "G"]
    for minimum, thermal in zip(tasks[::2], tasks[1::2]):
        assert (minimum.meta["conformer_id"], thermal.meta["conformer_id"]) == (0, 1)
        np.testing.assert_array_equal(minimum.molecule.numbers, thermal.molecule.numbers)
        d0, d1 = (np.linalg.norm(x[:, None] - x[None], axis=-1)
                  for x in (minimum.molecule.coords_bohr, thermal.molecule.coords_bohr))
        assert 0.01 < np.sqrt(np.mean((d1 - d0) ** 2)) < 1.0  # a thermal distortion, not a copy
    gly = tasks[-1].molecule  # H-capped glycine residue: H2N-CH2-CHO
    assert gly.formula == "C2H5NO" and gly.natm == 9
