"""Model preparer `hydrogens` and step `place-hydrogens` (geometry plugin)."""

from __future__ import annotations

import json
import types

import gemmi
import numpy as np
import pytest

from conftest import DATA, dataset
from refinekit.cli import main
from refinekit.plugin_api import AtomModel, InputError
from refinekit.plugin_api.numerics.riding import hydrogen_parents
from refinekit.plugins.geometry.hydrogens import (
    HydrogenOptions, Hydrogens, PlaceHydrogens, PlaceOptions,
)

MONLIB = str(DATA.parent / "monlib")


@pytest.fixture(scope="module")
def m1l2h() -> AtomModel:
    return AtomModel.from_structure(gemmi.read_structure(str(dataset("1l2h", "1l2h.cif"))))


def x_h_distances(model: AtomModel, element: str = "C") -> np.ndarray:
    parents = hydrogen_parents(model)
    h = np.flatnonzero(parents >= 0)
    h = h[model.element[parents[h]] == element]
    return np.linalg.norm(model.xyz[h] - model.xyz[parents[h]], axis=1)


def test_add_hydrogens_like_gemmi(m1l2h):
    out, figures = Hydrogens(HydrogenOptions(monlib=MONLIB)).prepare(m1l2h)
    # independent count: gemmi's own topology on a fresh copy
    st = gemmi.read_structure(str(dataset("1l2h", "1l2h.cif")))
    st.setup_entities()
    lib = gemmi.read_monomer_lib(MONLIB, sorted({r.name for r in st[0][0]}))
    gemmi.prepare_topology(st, lib, h_change=gemmi.HydrogenChange.ReAddButWater)
    n_h = sum(a.is_hydrogen() for r in st[0][0] for a in r)
    assert figures["hydrogens"] == n_h == int(out.is_hydrogen.sum()) > 1000
    assert out.n_atoms == m1l2h.n_atoms + n_h
    heavy = ~out.is_hydrogen
    assert np.array_equal(out.xyz[heavy], m1l2h.xyz)  # heavy atoms untouched, same order
    parents = hydrogen_parents(out)
    h = np.flatnonzero(out.is_hydrogen)
    assert np.all(parents[h] >= 0)
    assert np.allclose(out.b_iso[h], out.b_iso[parents[h]]) and np.allclose(out.occ[h], out.occ[parents[h]])
    # X-ray: C–H at the electron-cloud centre (0.97 Å in the library), nucleus 1.09 Å
    assert np.median(x_h_distances(out)) == pytest.approx(0.97, abs=0.01)
    nuc, _ = Hydrogens(HydrogenOptions(monlib=MONLIB, hydrogen_distances="nucleus")).prepare(m1l2h)
    assert np.median(x_h_distances(nuc)) == pytest.approx(1.09, abs=0.01)
    # no water H unless asked
    water = np.array([out.structure[0][int(c)][int(r)].is_water() for c, r, _ in out.atom_ref])
    assert not np.any(water & out.is_hydrogen)


def test_keep_and_remove(m1l2h):
    with_h, _ = Hydrogens(HydrogenOptions(monlib=MONLIB)).prepare(m1l2h)
    kept, fig = Hydrogens(HydrogenOptions(mode="keep")).prepare(with_h)
    assert kept is with_h and fig["hydrogens"] == int(with_h.is_hydrogen.sum())
    removed, fig = Hydrogens(HydrogenOptions(mode="remove")).prepare(with_h)
    assert fig["hydrogens"] == 0 and removed.n_atoms == m1l2h.n_atoms
    assert np.allclose(removed.xyz, m1l2h.xyz)


def test_unknown_residue_is_named():
    st = gemmi.read_structure(str(dataset("5e5z", "5e5z.pdb")))
    st[0][0][1].name = "XYZ"
    with pytest.raises(InputError) as err:
        Hydrogens(HydrogenOptions()).prepare(AtomModel.from_structure(st))
    assert "XYZ" in str(err.value) and "--ligand" in str(err.value)


def test_place_hydrogens_restores_ideal_positions(m1l2h):
    ideal, _ = Hydrogens(HydrogenOptions(monlib=MONLIB)).prepare(m1l2h)
    model = ideal.copy()
    h = model.is_hydrogen
    rng = np.random.default_rng(1)
    model.xyz[h] += rng.normal(scale=0.2, size=(int(h.sum()), 3))
    heavy_before = model.xyz[~h].copy()
    figures = PlaceHydrogens(PlaceOptions(monlib=MONLIB)).run(types.SimpleNamespace(model=model))
    assert figures["h_moved_rms"] == pytest.approx(0.2 * np.sqrt(3), rel=0.05)
    assert np.array_equal(model.xyz[~h], heavy_before)
    assert np.abs(model.xyz[h] - ideal.xyz[h]).max() < 1e-3


def test_refine_with_hydrogens_through_the_cli(tmp_path):
    config = tmp_path / "h.toml"
    config.write_text('[model]\nprepare = ["hydrogens"]\n')
    out = tmp_path / "out"
    code = main(["refine", str(dataset("5e5z", "5e5z.pdb")), str(dataset("5e5z", "5e5z.mtz")),
                 "--preset", "xray", "--cycles", "2", "--config", str(config), "-o", str(out)])
    assert code == 0
    st = gemmi.read_structure(str(out / "refined.cif"))
    assert st[0].has_hydrogen()
    assert "hydrogens:" in (out / "log.txt").read_text()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["cycles"][-1]["r_free"] <= stats["cycles"][0]["r_free"] + 0.005
