"""Real-space refinement end to end: `refinekit rsr`, the cryo-em preset, the rsr-search weight."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import gemmi
import numpy as np
import pytest

from conftest import dataset
from refinekit.cli import main
from refinekit.config import build_config
from refinekit.engine import create_components
from refinekit.plugin_api import AtomModel, ConfigError, MapData
from refinekit.plugins.electron_tables.table import ElectronTable
from refinekit.plugins.fcalc_fft.engine import FftFcalc
from refinekit.plugins.geometry.term import AdpSimilarity, GeometryOptions, GeometryRestraint
from refinekit.plugins.map_cc.term import MapCCTerm
from refinekit.plugins.map_io.ccp4 import read_ccp4, write_ccp4
from refinekit.plugins.map_value.term import MapValueTerm
from refinekit.plugins.rsr_weight.search import (RsrSearchOptions, RsrWeightSearch, Segment,
                                                 robust_mean_log, segment_model, segment_windows)
from refinekit.registry import Registry

EM = ("6i5a_tmv_em_box",)


def em_paths() -> tuple[str, str]:
    return (str(dataset(*EM, "6i5a_box_complete.pdb")), str(dataset(*EM, "6i5a_box.ccp4")))


def em_model() -> AtomModel:
    path = em_paths()[0]
    return AtomModel.from_structure(gemmi.read_structure(path), path)


# ----------------------------------------------------------------- weight search pieces
def test_segment_windows_are_disjoint_amino_acid_runs():
    model = em_model()
    windows = segment_windows(model, 5, 12, np.random.default_rng(1))
    assert len(windows) == 12
    seen = set()
    for ci, ri in windows:
        chain = model.structure[0][ci]
        for r in range(ri, ri + 5):
            assert gemmi.find_tabulated_residue(chain[r].name).is_amino_acid()
            assert (ci, r) not in seen
            seen.add((ci, r))
    assert windows != segment_windows(model, 5, 12, np.random.default_rng(2))  # random


def test_segment_model_copies_the_residues_with_current_coordinates():
    model = em_model()
    model.xyz[:] += 0.5  # the arrays, not the stale structure, are the truth
    st = model.to_structure()
    seg = segment_model(st, 0, 10, 4)
    rows = np.flatnonzero((model.atom_ref[:, 0] == 0) & (model.atom_ref[:, 1] >= 10)
                          & (model.atom_ref[:, 1] < 14))
    assert seg.n_atoms == len(rows)
    np.testing.assert_allclose(seg.xyz, model.xyz[rows])
    assert list(seg.element) == list(model.element[rows])


def test_robust_mean_drops_outliers_and_averages_logs():
    mean, keep = robust_mean_log(np.array([10.0, 20.0, 10.0, 20.0, 1e4]), 3.0)
    assert keep.tolist() == [True, True, True, True, False]
    assert mean == pytest.approx(np.sqrt(10.0 * 20.0))
    mean, keep = robust_mean_log(np.array([5.0, 5.0, 5.0]), 3.0)
    assert mean == pytest.approx(5.0) and keep.all()
    w = np.array([20.0, 20.0, 20.0, 20.0, 10.0, 2000.0])  # MAD 0: the floor decides
    assert robust_mean_log(w, 3.0)[1].tolist() == [True] * 4 + [False, False]
    mean, keep = robust_mean_log(w, 3.0, floor=0.25)
    assert keep.tolist() == [True] * 5 + [False]
    assert mean == pytest.approx(10 ** np.log10(w[:5]).mean())


class LadderSegment(Segment):
    """Segment double: bond rmsd = 0.001·w, fit = −w (so the answer is the largest w ≤ 20)."""

    def __init__(self):
        self.calls: list[float] = []

    def trial(self, factor, max_iter):
        self.calls.append(factor)
        return -factor, 0.001 * factor, 1.0


@pytest.mark.parametrize("w_ref", [1.0, 20.0, 300.0, 1e5])
def test_choose_finds_the_largest_acceptable_rung_by_bisection(w_ref):
    o = RsrSearchOptions(n_weights=9, span=1.0, bond_rmsd_max=0.02)
    seg = LadderSegment()
    chosen = seg.choose(w_ref, o)
    step = 2.0 * o.span / (o.n_weights - 1)
    rungs = w_ref * 10 ** (-o.span + step * np.arange(-(o.n_weights - 1), 2 * o.n_weights - 1))
    acceptable = rungs[0.001 * rungs <= 0.02 + 1e-12]
    if len(acceptable) == 0:
        assert np.isnan(chosen)
    else:
        assert chosen == pytest.approx(acceptable.max())
    assert len(seg.calls) <= 2 * o.n_weights  # bisection or a bounded walk, never the whole range twice


def test_rmsd_limits_tighten_as_the_inverse_square_of_resolution():
    o = RsrSearchOptions()
    assert o.limits(None) == o.limits(2.0) == o.limits(3.0) == (0.02, 2.0)
    assert o.limits(4.0) == pytest.approx((0.02 * 9 / 16, 2.0 * 9 / 16))
    assert o.limits(6.0) == pytest.approx((0.005, 0.5))
    assert RsrSearchOptions(tighten_power=0.0).limits(6.0) == (0.02, 2.0)
    for bad in ({"tighten_power": -1.0}, {"tighten_start": 0.0}, {"adp_scale": 0.0}):
        with pytest.raises(ValueError):
            RsrSearchOptions(**bad).validate()
    seg = LadderSegment()  # bond rmsd 0.001·w, angle rmsd 1°
    assert seg.choose(10.0, o, (0.005, 2.0)) == pytest.approx(10.0 ** 0.5)  # w ≤ 5: the rung 3.16
    assert np.isnan(seg.choose(10.0, o, o.limits(6.0)))  # 1° > the 6 Å limit 0.5°: no rung
    assert seg.choose(10.0, o) == pytest.approx(10.0 ** 1.25)  # 0.02 Å: the rung below w = 20


def test_limits_follow_the_resolution_of_a_blurred_map():
    """The rmsd-limit rule uses max(d, d99): 6i5a (d99 ≈ 2.3 Å) keeps its nominal 3 Å, the same
    map blurred by B = 200 Å² counts as a ≈ 5 Å map, and use_d99 = false keeps the nominal d."""
    from refinekit.plugin_api.numerics.maps import apply_overall_b, d99

    m = read_ccp4(em_paths()[1], resolution=3.0)
    scheme = RsrWeightSearch()
    assert scheme._limit_resolution(m) == 3.0 and scheme.report["d99"] == pytest.approx(2.30, abs=0.05)
    blurred = apply_overall_b(m, 200.0)
    d_blur = scheme._limit_resolution(blurred)
    assert d_blur == pytest.approx(d99(blurred)) and d_blur > 4.5
    assert scheme.options.limits(d_blur)[0] < 0.01
    assert RsrWeightSearch(RsrSearchOptions(use_d99=False))._limit_resolution(blurred) == 3.0


def test_segment_trials_trade_fit_for_geometry_on_real_data():
    """The monotonic premise of the bisection, on a real 5-residue segment in the 6i5a map."""
    model, m = em_model(), read_ccp4(em_paths()[1], resolution=3.0)
    seg_model = segment_model(model.to_structure(), 0, 20, 5)
    ctx = SimpleNamespace(model=seg_model, data=m)
    data, geometry = MapValueTerm(), GeometryRestraint(GeometryOptions(hydrogen_distances="nucleus"))
    data.setup(ctx)
    geometry.setup(ctx)
    seg = Segment(seg_model, {"map": (data, 1.0)}, {"geometry": (geometry, 1.0)})
    w_ref = seg.reference_weight()
    results = [seg.trial(w, 40) for w in w_ref * np.array([0.1, 0.5, 2.0, 10.0])]
    fits, bonds = [r[0] for r in results], [r[1] for r in results]
    assert fits == sorted(fits, reverse=True)  # more data weight, better fit
    assert bonds == sorted(bonds)  # ... and worse geometry
    assert bonds[0] < 0.02 < bonds[-1]  # the ladder brackets the target
    np.testing.assert_array_equal(seg.model.xyz, seg.start)  # trials leave the segment as found


def test_scheme_scales_data_weights_only_for_coordinate_refinement():
    model, m = em_model(), read_ccp4(em_paths()[1], resolution=3.0)
    ctx = SimpleNamespace(model=model, data=m, cycle=1, options={}, fcalc=None, table=None,
                          log=lambda message: None)
    data, geometry = MapValueTerm(), GeometryRestraint(GeometryOptions(hydrogen_distances="nucleus"))
    data.setup(ctx)
    geometry.setup(ctx)
    scheme = RsrWeightSearch(RsrSearchOptions(n_segments=4))
    assert scheme.weights(ctx, {"map": data}, {"map": 2.0}) == {"map": 2.0}  # no restraint: untouched
    weights = scheme.weights(ctx, {"map": data, "geometry": geometry}, {"map": 2.0, "geometry": 1.0})
    factor = scheme.report["weight_factor"]
    assert weights == {"map": pytest.approx(2.0 * factor), "geometry": 1.0}
    assert scheme.report["segments"] == 4 and 1.0 < factor < 1000.0
    report = scheme.report
    ctx.cycle = 5
    assert scheme.weights(ctx, {"map": data, "geometry": geometry}, {"map": 1.0, "geometry": 1.0}) \
        == {"map": pytest.approx(factor), "geometry": 1.0}
    assert scheme.report is report  # searched once
    ctx.data = None
    with pytest.raises(ConfigError, match="needs a density map"):
        RsrWeightSearch().weights(ctx, {"map": data, "geometry": geometry}, {"map": 1.0, "geometry": 1.0})


def test_b_refinement_weight_balances_the_gradient_norms():
    """B step (map-cc + adp-similarity, no bond/angle statistics): w = ‖∇_B R‖/‖∇_B D‖;
    with equal B values (∇R = 0) ∇R is taken after a 1 Å² rms data step, and B is restored."""
    model = segment_model(em_model().to_structure(), 0, 20, 8)
    fcalc = FftFcalc()
    fcalc.use_table(ElectronTable())
    ctx = SimpleNamespace(model=model, data=read_ccp4(em_paths()[1], resolution=3.0), cycle=1,
                          options={}, fcalc=fcalc, table=ElectronTable(), log=lambda message: None)
    cc, adp = MapCCTerm(), AdpSimilarity()
    cc.setup(ctx)
    adp.setup(ctx)

    def b_grad(term):
        return term.evaluate(model).gradient.b_iso

    weights = RsrWeightSearch(RsrSearchOptions(adp_scale=2.0)).weights(
        ctx, {"cc": cc, "adp": adp}, {"cc": 3.0, "adp": 1.0})
    assert weights["adp"] == 1.0
    assert np.linalg.norm(weights["cc"] * b_grad(cc)) == pytest.approx(2.0 * np.linalg.norm(b_grad(adp)),
                                                                      rel=1e-9)
    assert weights["cc"] > 1e3  # −CC has B gradients of order 1/N: a large factor is the point
    model.b_iso[:] = 40.0
    model.mark_changed()
    assert np.linalg.norm(b_grad(adp)) == 0.0
    scheme = RsrWeightSearch()
    flat = scheme.weights(ctx, {"cc": cc, "adp": adp}, {"cc": 1.0, "adp": 1.0})["cc"]
    np.testing.assert_array_equal(model.b_iso, 40.0)
    g = b_grad(cc)  # the data gradient the scheme saw (weight 1)
    model.b_iso[:] -= g * np.sqrt(g.size) / np.linalg.norm(g)  # its 1 Å² rms step, redone here
    model.mark_changed()
    assert flat == pytest.approx(np.linalg.norm(b_grad(adp)) / np.linalg.norm(g), rel=1e-9)
    assert scheme.report["balance:cc"] == flat


# ----------------------------------------------------------------- preset
def test_cryo_em_preset_is_valid_and_uses_electron_factors():
    registry = Registry.discover()
    config = build_config({"preset": "cryo-em"}, registry)
    parts = create_components(registry, config)
    assert config.fcalc.table == "electron"
    assert parts.weight_scheme.name == "rsr-search"
    assert {t.role for t in parts.terms.values()} == {"target", "restraint"}


# ----------------------------------------------------------------- end to end
@pytest.mark.slow
def test_rsr_6i5a_raises_cc_mask_with_good_geometry(tmp_path, capsys):
    """6i5a TMV box at 3.0 Å (servalcat: CC_mask 0.760 → 0.808, 0.0123 Å / 1.81°, 7.6 s).

    Measured here (cryo-em preset, xyz then B each cycle; `--cycles 1`: one map-value cycle and
    the map-cc polish cycle): CC_mask 0.777 → 0.805 after the map-value cycle (0.804 after four;
    xyz alone: 0.784 after two), 0.814 after the polish; bonds 0.008 Å, angles 1.25° (0.012 Å /
    1.6° before the polish); xyz weight factor ≈ 17–25 from the segment search, B weight factor
    ≈ 10⁶ from the gradient balance, polish weight 7.2·10⁵ by curvature matching.
    """
    model_path, map_path = em_paths()
    out = tmp_path / "out"
    rc = main(["rsr", model_path, map_path, "--resolution", "3.0", "--cycles", "1", "-o", str(out)])
    assert rc == 0
    stats = json.loads((out / "stats.json").read_text())
    start, final = stats["start"], stats["final"]
    assert final["cc_mask"] > start["cc_mask"] + 0.02  # B refinement adds ≈ 0.02 to xyz's 0.007
    assert final["cc_box"] > start["cc_box"]
    assert final["rmsd_bonds"] <= 0.02 and final["rmsd_angles"] <= 2.0
    assert len(stats["seconds_per_cycle"]) == 2  # the map-value cycle and the polish
    assert stats["cycles"][2]["cc_mask"] > stats["cycles"][1]["cc_mask"]  # the polish adds ≈ 0.009
    search = stats["weight_search"]
    # ≈ 1 s of CPU; the bound is on wall time, generous for a loaded shared machine (33 s seen at load 20)
    assert search["kept"] >= 5 and search["seconds"] < 120
    assert (search["bond_rmsd_max"], search["angle_rmsd_max"]) == (0.02, 2.0)  # 3 Å: not tightened
    assert stats["cycles"][1]["weights"]["map"] == pytest.approx(search["weight_factor"])
    assert stats["cycles"][1]["weights"]["cc"] == pytest.approx(search["balance:cc"])
    assert 1e5 < search["balance:cc"] < 1e7
    assert stats["cycles"][2]["weights"]["cc-xyz"] == pytest.approx(search["match:cc-xyz"])
    assert "cc_mask_residue" in final
    refined = gemmi.read_structure(str(out / "refined.cif"))
    assert refined[0].count_atom_sites() == em_model().n_atoms
    b_start = np.array([a.b_iso for r in em_model().structure[0][0] for a in r if a.element.name != "H"])
    b_end = np.array([a.b_iso for r in refined[0][0] for a in r if a.element.name != "H"])
    assert np.abs(b_end - b_start).mean() > 1.0  # B was refined
    assert "CC_mask" in capsys.readouterr().out


@pytest.mark.slow
def test_rsr_6i5a_at_the_catalogue_definition_ends_above_its_cc_mask(tmp_path):
    """The catalogue's "CC_mask 0.84" for 6i5a is our CC_mask (2.5 Å mask) at d ≈ 2.45 Å
    (docs/benchmarks.md: 0.848 at 2.4 Å, 0.826 at 2.6 Å; the map supports ≈ 2.3 Å).

    Measured: 0.8428 → 0.8879 after the map-value cycle (five: 0.8879), 0.8957 after the map-cc
    polish; bonds 0.0055 Å, angles 1.14° (0.0118 Å / 1.58° before the polish).
    """
    model_path, map_path = em_paths()
    out = tmp_path / "out"
    assert main(["rsr", model_path, map_path, "--resolution", "2.45", "--cycles", "1",
                 "-o", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    start, final = stats["start"], stats["final"]
    assert start["cc_mask"] == pytest.approx(0.84, abs=0.01)
    assert final["cc_mask"] > 0.86
    assert final["rmsd_bonds"] <= 0.02 and final["rmsd_angles"] <= 2.0


def protein_xyz(path) -> dict:
    """Non-H amino-acid atom positions keyed by (chain, residue, atom, altloc)."""
    st = gemmi.read_structure(str(path))
    out = {}
    for ch in st[0]:
        for r in ch:
            info = gemmi.find_tabulated_residue(r.name)
            if info is not None and info.is_amino_acid():
                for at in r:
                    if at.element.name != "H":
                        out[(ch.name, str(r.seqid), at.name, at.altloc)] = at.pos.tolist()
    return out


def test_rsr_crystal_map_recovers_a_perturbed_model(tmp_path):
    """Full-cell P4₃ map of deposited 1l2h (gemmi's X-ray density, d = 2.5 Å); start 1l2h_p03
    (0.30 Å rms shifts). Measured (`--cycles 1`: one map-value cycle, then the map-cc polish):
    CC_mask 0.848 → 0.915, rms error 0.30 → 0.116 Å, bonds 0.010 Å, angles 1.84°, 11 s (two
    map-value cycles without the polish: CC_mask 0.908, 11 s; the polish costs ≈ 8 s here)."""
    st = gemmi.read_structure(str(dataset("1l2h", "1l2h.cif")))
    st.remove_hydrogens()
    st.remove_ligands_and_waters()
    dc = gemmi.DensityCalculatorX()
    dc.d_min = 2.5
    dc.grid.setup_from(st)
    dc.put_model_density_on_grid(st[0])
    ccp4 = gemmi.Ccp4Map()
    ccp4.grid = dc.grid
    ccp4.update_ccp4_header(2, True)
    map_path = tmp_path / "1l2h_calc.ccp4"
    ccp4.write_ccp4_map(str(map_path))
    start_path, out = dataset("1l2h", "1l2h_p03.cif"), tmp_path / "out"
    assert main(["rsr", str(start_path), str(map_path), "--resolution", "2.5", "--cycles", "1",
                 "-o", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["final"]["cc_mask"] > stats["start"]["cc_mask"] + 0.015
    assert stats["final"]["rmsd_bonds"] <= 0.02 and stats["final"]["rmsd_angles"] <= 2.0
    true, before, after = (protein_xyz(p) for p in (dataset("1l2h", "1l2h.cif"), start_path,
                                                     out / "refined.cif"))
    keys = sorted(set(true) & set(before) & set(after))
    assert len(keys) > 1000

    def error(model):
        d = np.array([true[k] for k in keys]) - np.array([model[k] for k in keys])
        return float(np.sqrt((d * d).sum(axis=1).mean()))

    assert error(before) > 0.28 and error(after) < 0.6 * error(before)


# ----------------------------------------------------------------- bad input through the CLI
def rsr_error(capsys, model: str, map_path: str, *extra: str, out="out") -> str:
    rc = main(["rsr", model, map_path, *extra, "-o", out])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("refinekit: error:")
    return err


def test_missing_and_absurd_resolution(tmp_path, capsys):
    model, map_path = em_paths()
    out = str(tmp_path / "o")
    assert "map resolution is required" in rsr_error(capsys, model, map_path, out=out)
    assert "implausible" in rsr_error(capsys, model, map_path, "--resolution", "80", out=out)
    assert "positive" in rsr_error(capsys, model, map_path, "--resolution", "-3", out=out)
    assert "Nyquist" in rsr_error(capsys, model, map_path, "--resolution", "1.5", out=out)
    assert not (tmp_path / "o").exists()


def test_broken_header_and_empty_maps(tmp_path, capsys):
    model, map_path = em_paths()
    ccp4 = gemmi.read_ccp4_map(map_path)
    ccp4.set_header_i32(17, 5)  # MAPC must be 1, 2 or 3
    bad = tmp_path / "axes.ccp4"
    ccp4.write_ccp4_map(str(bad))
    err = rsr_error(capsys, model, str(bad), "--resolution", "3", out=str(tmp_path / "o"))
    assert "axes.ccp4" in err and "17" in err
    raw = open(map_path, "rb").read()
    header = bytearray(raw[:1024])
    header[0:12] = struct.pack("<3i", 0, 0, 0)  # NC = NR = NS = 0
    zero = tmp_path / "zero.ccp4"
    zero.write_bytes(bytes(header))
    assert "zero.ccp4" in rsr_error(capsys, model, str(zero), "--resolution", "3", out=str(tmp_path / "o"))
    empty = tmp_path / "empty.map"
    empty.write_bytes(b"")
    assert "empty.map" in rsr_error(capsys, model, str(empty), "--resolution", "3", out=str(tmp_path / "o"))


def test_constant_map(tmp_path, capsys):
    model, map_path = em_paths()
    m = read_ccp4(map_path)
    flat = tmp_path / "flat.ccp4"
    write_ccp4(MapData(np.ones_like(m.values), m.cell, m.spacegroup, m.grid_shape, m.origin), str(flat))
    err = rsr_error(capsys, model, str(flat), "--resolution", "3", out=str(tmp_path / "o"))
    assert "constant" in err and "flat.ccp4" in err


def test_model_outside_the_box(tmp_path, capsys):
    model_path, map_path = em_paths()
    st = gemmi.read_structure(model_path)
    st[0][0][0][0].pos += gemmi.Position(0.0, 0.0, 60.0)  # one atom beyond the 45.7 Å box along c
    moved = tmp_path / "moved.pdb"
    st.write_pdb(str(moved))
    err = rsr_error(capsys, str(moved), map_path, "--resolution", "3", out=str(tmp_path / "o"))
    assert "outside the map box along c" in err
