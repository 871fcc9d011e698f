"""Bad or unusual X-ray input through the CLI (issue 3): each case is handled the way a
crystallographer expects, or refused with one clear message — exit status 2, the file and
what was expected named, no traceback, no partial output in OUTDIR.

Inputs are made here from PDB 5E5Z (47 atoms, P2₁, FP SIGFP I SIGI FREE) and 1EXR
(1.0 Å, P1, 642 altloc atoms).  What each case does is documented in docs/bad-input.md.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import gemmi
import numpy as np
import pytest

from conftest import dataset
from refinekit.cli import main
from refinekit.plugin_api import AtomModel
from refinekit.plugin_api.numerics.reflections import epsilon_and_centric

OUTPUTS = ("refined.cif", "refined.pdb", "refined.mtz", "stats.json", "checkpoint.cif", "log.txt")


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def e5z():
    """(model path, data path, {label: column array}, hkl, cell, space group) of 5E5Z."""
    model, data = dataset("5e5z", "5e5z.pdb"), dataset("5e5z", "5e5z.mtz")
    mtz = gemmi.read_mtz_file(str(data))
    cols = {c.label: np.array(c.array, dtype=np.float32) for c in mtz.columns}
    hkl = np.array(mtz.make_miller_array())
    return types.SimpleNamespace(model=str(model), data=str(data), cols=cols, hkl=hkl,
                                 cell=mtz.cell, sg=mtz.spacegroup)


def write_mtz(path: Path, src, columns: list[tuple[str, str, np.ndarray]]) -> str:
    """An MTZ with src's reflections and the given (label, type, values) columns."""
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup, mtz.cell = src.sg, src.cell
    mtz.add_dataset("x")
    for label, kind, _ in columns:
        mtz.add_column(label, kind)
    mtz.set_data(np.column_stack([src.hkl.astype(np.float32)] +
                                 [np.asarray(v, np.float32) for _, _, v in columns]))
    mtz.write_to_file(str(path))
    return str(path)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "Traceback" not in out.out
    return code, out.out, out.err


def refused(code: int, err: str, outdir: Path, *needles: str) -> None:
    """Exit status 2, one 'refinekit: error:' line containing ``needles``, no outputs."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("refinekit: error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    present = [name for name in OUTPUTS if (outdir / name).exists()]
    assert not present, present


def stats(outdir: Path) -> dict:
    return json.loads((outdir / "stats.json").read_text())


def refine_ok(argv: list[str], capsys, outdir: Path) -> tuple[dict, str]:
    code, out, err = run(argv + ["-o", outdir], capsys)
    assert code == 0, err
    return stats(outdir), (outdir / "log.txt").read_text()


# --------------------------------------------------------------------------- Friedel pairs only
def test_friedel_amplitudes_only_are_merged(tmp_path, e5z, capsys):
    """F(+)/σ/F(−)/σ only: merged to the mean F; same start R as the mean-F file."""
    fp, sig = e5z.cols["FP"], e5z.cols["SIGFP"]
    _, centric = epsilon_and_centric(e5z.hkl, e5z.sg)
    delta = np.where(centric, 0.0, 0.04 * fp)  # a centric reflection is written into both columns
    path = write_mtz(tmp_path / "anom.mtz", e5z, [
        ("FREE", "I", e5z.cols["FREE"]), ("F(+)", "G", fp + delta), ("SIGF(+)", "L", sig),
        ("F(-)", "G", fp - delta), ("SIGF(-)", "L", sig)])
    ref = write_mtz(tmp_path / "mean.mtz", e5z, [
        ("FREE", "I", e5z.cols["FREE"]), ("FP", "F", fp), ("SIGFP", "Q", sig)])
    s_anom, log = refine_ok(["refine", e5z.model, path, "--cycles", "1"], capsys, tmp_path / "a")
    s_mean, _ = refine_ok(["refine", e5z.model, ref, "--cycles", "1"], capsys, tmp_path / "m")
    assert "merged=mean of F(+)/F(-) (Friedel mates)" in log
    assert s_anom["cycles"][0]["r_work"] == pytest.approx(s_mean["cycles"][0]["r_work"], abs=1e-6)
    assert s_anom["final"]["r_work"] < s_anom["cycles"][0]["r_work"]


def test_friedel_intensities_only_are_merged(tmp_path, e5z, capsys):
    """I(+) I(−) SIGI(+) SIGI(−) (σ not adjacent, found by label): mean I, then French–Wilson."""
    i, sig = e5z.cols["I"], e5z.cols["SIGI"]
    path = write_mtz(tmp_path / "anom.mtz", e5z, [
        ("FREE", "I", e5z.cols["FREE"]), ("I(+)", "K", 1.05 * i), ("I(-)", "K", 0.95 * i),
        ("SIGI(+)", "M", sig), ("SIGI(-)", "M", sig)])
    s, log = refine_ok(["refine", e5z.model, path, "--preset", "xray", "--cycles", "1"],
                       capsys, tmp_path / "o")
    assert "merged=mean of I(+)/I(-) (Friedel mates)" in log
    assert "french-wilson: n_input=441" in log
    assert s["final"]["r_work"] < s["cycles"][0]["r_work"]


def test_friedel_intensities_without_sigma_are_refused(tmp_path, e5z, capsys):
    path = write_mtz(tmp_path / "nosig.mtz", e5z, [
        ("FREE", "I", e5z.cols["FREE"]), ("I(+)", "K", e5z.cols["I"]), ("I(-)", "K", e5z.cols["I"])])
    code, _, err = run(["refine", e5z.model, path, "-o", tmp_path / "o"], capsys)
    refused(code, err, tmp_path / "o", "nosig.mtz", "I(+)", "σ(I)")


# --------------------------------------------------------------------------- missing σ
def test_amplitudes_without_sigma_refine_with_a_warning(tmp_path, e5z, capsys):
    """F without σ (behind calculated FC/PHIC, which are never taken for data): ML and LS run,
    the log warns that σ(F) is unknown."""
    path = write_mtz(tmp_path / "nosigf.mtz", e5z, [
        ("FREE", "I", e5z.cols["FREE"]), ("FC", "F", 2 * e5z.cols["FP"]),
        ("PHIC", "P", np.zeros_like(e5z.cols["FP"])), ("FP", "F", e5z.cols["FP"])])
    for preset in ("xray", "default"):
        s, log = refine_ok(["refine", e5z.model, path, "--preset", preset, "--cycles", "1"],
                           capsys, tmp_path / preset)
        assert "data columns: f=FP, free=FREE" in log
        assert "warning: " in log and "no σ(F) column" in log
        assert s["final"]["r_work"] < s["cycles"][0]["r_work"]


def test_intensities_without_sigma_are_refused(tmp_path, e5z, capsys):
    path = write_mtz(tmp_path / "nosigi.mtz", e5z, [("FREE", "I", e5z.cols["FREE"]),
                                                     ("IMEAN", "J", e5z.cols["I"])])
    code, _, err = run(["refine", e5z.model, path, "-o", tmp_path / "o"], capsys)
    refused(code, err, tmp_path / "o", "nosigi.mtz", "IMEAN", "σ(I)")
    # naming the column explicitly gives the same kind of answer
    cfg = tmp_path / "i.toml"
    cfg.write_text('[data]\ni = "IMEAN"\n')
    code, _, err = run(["refine", e5z.model, path, "--config", cfg, "-o", tmp_path / "o"], capsys)
    refused(code, err, tmp_path / "o", "nosigi.mtz", "IMEAN", "[data] sigi")


def test_sf_mmcif_without_sigmas(tmp_path, capsys):
    """sf-mmCIF (1V9G): F_meas_au without its σ refines with the warning; intensities without
    σ and no amplitudes are refused."""
    model = dataset("1v9g_neutron", "1v9g-spk.cif")
    text = dataset("1v9g_neutron", "1v9g-sf.cif").read_text()
    nosigf = tmp_path / "nosigf-sf.cif"
    nosigf.write_text(text.replace("_refln.F_meas_sigma_au", "_refln.pdbx_unused_1")
                      .replace("_refln.intensity_meas", "_refln.pdbx_unused_2"))
    # the minimal LS preset: the data handling is the point, and the model's SPK/DOD need dictionaries
    s, log = refine_ok(["refine", model, nosigf, "--preset", "default", "--cycles", "1"], capsys,
                       tmp_path / "o")
    assert "data columns: f=F_meas_au, free=status 'f'" in log and "no σ(F) column" in log
    assert s["final"]["r_work"] < s["cycles"][0]["r_work"]
    nosigi = tmp_path / "nosigi-sf.cif"
    nosigi.write_text(text.replace("_refln.F_meas_au", "_refln.pdbx_unused_1")
                      .replace("_refln.F_meas_sigma_au", "_refln.pdbx_unused_2")
                      .replace("_refln.intensity_sigma", "_refln.pdbx_unused_3"))
    code, _, err = run(["refine", model, nosigi, "-o", tmp_path / "o2"], capsys)
    refused(code, err, tmp_path / "o2", "nosigi-sf.cif", "intensity_meas", "σ(I)")


def test_merge_friedel_counts_a_duplicated_centric_once():
    from refinekit.plugin_api.numerics.reflections import merge_friedel

    mean, sig = merge_friedel(np.array([10.0, 10.0, 10.0]), np.ones(3), np.array([10.0, 12.0, 10.0]),
                              np.ones(3), centric=np.array([True, False, False]))
    assert np.allclose(mean, [10.0, 11.0, 10.0])
    assert np.allclose(sig, [1.0, np.sqrt(0.5), np.sqrt(0.5)])  # acentric equal mates: 2 measurements
    assert merge_friedel(np.ones(2), None, np.ones(2), None)[1] is None


# --------------------------------------------------------------------------- free flags
@pytest.mark.parametrize("value, convention", [(0, "auto"), (0, "ccp4"), (1, "phenix")])
def test_constant_free_flags_mean_no_test_set(tmp_path, e5z, capsys, value, convention):
    """A flag column with one value everywhere must not make every reflection free (CCP4 reading
    of all-zero) nor none: a 5 % test set is generated and the log says so."""
    path = write_mtz(tmp_path / "flags.mtz", e5z, [
        ("FREE", "I", np.full(len(e5z.hkl), value)), ("FP", "F", e5z.cols["FP"]),
        ("SIGFP", "Q", e5z.cols["SIGFP"])])
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nfree_convention = "{convention}"\n')
    _, log = refine_ok(["refine", e5z.model, path, "--config", cfg, "--cycles", "1"], capsys,
                       tmp_path / "o")
    assert f"column FREE holds the single value {value} for every reflection: no test set" in log
    n_free = int(log.split(" free, d ")[0].rsplit(" ", 1)[1])
    assert 0.02 * len(e5z.hkl) < n_free < 0.10 * len(e5z.hkl)


# --------------------------------------------------------------------------- unknown residue
def _renamed(e5z, tmp_path: Path) -> str:
    st = gemmi.read_structure(e5z.model)
    st[0][0][0].name = "XYZ"  # LEU 1
    path = tmp_path / "xyz.pdb"
    st.write_pdb(str(path))
    return str(path)


def test_unknown_residue_is_refused_then_accepted_with_ligand(tmp_path, e5z, capsys):
    model = _renamed(e5z, tmp_path)
    code, _, err = run(["refine", model, e5z.data, "--preset", "xray", "-o", tmp_path / "o"], capsys)
    refused(code, err, tmp_path / "o", "XYZ (chain A, residue 1)", "--ligand FILE.cif")
    # a dictionary for XYZ (LEU's, renamed) given with --ligand makes it refinable
    from refinekit.plugins.geometry.library import EMBEDDED

    cif = tmp_path / "XYZ.cif"
    cif.write_text((EMBEDDED / "l" / "LEU.cif").read_text().replace("LEU", "XYZ"))
    s, log = refine_ok(["refine", model, e5z.data, "--preset", "xray", "--cycles", "1",
                        "--ligand", cif], capsys, tmp_path / "ok")
    assert s["final"]["r_work"] < s["cycles"][0]["r_work"]
    code, _, err = run(["refine", model, e5z.data, "--ligand", tmp_path / "none.cif",
                        "-o", tmp_path / "o2"], capsys)
    refused(code, err, tmp_path / "o2", "none.cif: file not found")


# --------------------------------------------------------------------------- hydrogens
def test_model_with_and_without_riding_hydrogens(tmp_path, e5z, capsys):
    from refinekit.plugins.geometry.library import EMBEDDED

    st = gemmi.read_structure(e5z.model)
    st.setup_entities()
    lib = gemmi.read_monomer_lib(str(EMBEDDED), st[0].get_all_residue_names(), ignore_missing=True)
    gemmi.prepare_topology(st, lib, h_change=gemmi.HydrogenChange.ReAdd, warnings=sys.stderr,
                           ignore_unknown_links=True)
    n_h = sum(a.is_hydrogen() for r in st[0][0] for a in r)
    n_water_h = sum(a.is_hydrogen() for r in st[0][0] if r.is_water() for a in r)
    assert n_h > 40 and n_water_h > 0
    with_h = tmp_path / "with_h.cif"
    st.make_mmcif_document().write_file(str(with_h))
    keep = tmp_path / "keep.toml"
    keep.write_text('[model.prepare_options.hydrogens]\nmode = "keep"\n')
    # the xray preset regenerates riding H (waters without H) whatever the input has;
    # mode "keep" refines the file's own H, or none
    expected = {("h", "add"): n_h - n_water_h, ("noh", "add"): n_h - n_water_h,
                ("h", "keep"): n_h, ("noh", "keep"): 0}
    for (name, mode), count in expected.items():
        model = with_h if name == "h" else e5z.model
        extra = ["--config", str(keep)] if mode == "keep" else []
        s, _ = refine_ok(["refine", model, e5z.data, "--preset", "xray", "--cycles", "2", *extra],
                         capsys, tmp_path / f"{name}_{mode}")
        assert s["final"]["r_work"] < s["cycles"][0]["r_work"]
        assert s["final"]["rmsd_bonds"] < 0.02
        out = gemmi.read_structure(str(tmp_path / f"{name}_{mode}" / "refined.cif"))
        assert sum(a.is_hydrogen() for r in out[0][0] for a in r) == count


# --------------------------------------------------------------------------- alternative conformations
def test_altlocs_are_not_restrained_against_each_other():
    """Moving conformer A changes no restraint force on conformer B (1EXR, 642 altloc atoms):
    no bond, angle, torsion, plane or contact couples two different altlocs."""
    from refinekit.plugins.geometry.term import GeometryOptions, GeometryRestraint

    st = gemmi.read_structure(str(dataset("1exr_calmodulin_1p0A_aniso", "1exr.pdb")))
    st.setup_entities()
    model = AtomModel.from_structure(st)
    alt = np.array([a.altloc for a in model.atoms()])
    assert np.count_nonzero(alt != "\0") == 642
    term = GeometryRestraint(GeometryOptions(symmetry=False))  # P1 images may pair A with B
    term.setup(types.SimpleNamespace(model=model))
    g0 = term.evaluate(model, want_grad=True).gradient.xyz.copy()
    moved = alt == "A"
    rng = np.random.default_rng(1)
    model.xyz[moved] += rng.normal(0.0, 0.3, (np.count_nonzero(moved), 3))
    model.mark_changed()
    g1 = term.evaluate(model, want_grad=True).gradient.xyz
    others = (alt != "A") & (alt != "\0")
    assert np.abs(g1[moved] - g0[moved]).max() > 1.0  # A itself feels the move
    assert np.allclose(g1[others], g0[others], rtol=0, atol=1e-9)


def test_altloc_model_refines(tmp_path, capsys):
    """1EXR (A/B/C conformers, anisotropic U) refines a cycle; altlocs and occupancies survive.

    The data are cut to 2 Å in the file (not by [data] d_min) so that the FFT grid, which
    follows the file's resolution, stays small enough for a quick test.
    """
    model = dataset("1exr_calmodulin_1p0A_aniso", "1exr.pdb")
    mtz = gemmi.read_mtz_file(str(dataset("1exr_calmodulin_1p0A_aniso", "r1exrsf_f.mtz")))
    table = np.array(mtz, copy=False)
    mtz.set_data(table[mtz.make_d_array() >= 2.0])
    data = tmp_path / "1exr_2A.mtz"
    mtz.write_to_file(str(data))
    s, _ = refine_ok(["refine", model, data, "--preset", "xray", "--cycles", "1"],
                     capsys, tmp_path / "o")
    assert s["final"]["r_work"] < s["cycles"][0]["r_work"]
    before = gemmi.read_structure(str(model))
    after = gemmi.read_structure(str(tmp_path / "o" / "refined.cif"))

    def alts(st, hydrogen=False):
        return [(r.seqid.num, a.name, a.altloc, round(a.occ, 2)) for r in st[0][0] for a in r
                if a.altloc != "\0" and a.is_hydrogen() == hydrogen]

    assert alts(after) == alts(before)
    # riding H added by the preset take the occupancy of their conformer (own residue, or
    # the neighbour whose conformers split an amide H), so the copies add up to one atom
    heavy = {(num, alt, occ) for num, _, alt, occ in alts(after)}
    added = alts(after, hydrogen=True)
    assert added and all(any((num + d, alt, occ) in heavy for d in (0, -1, 1))
                         for num, _, alt, occ in added)


# --------------------------------------------------------------------------- cells
@pytest.mark.parametrize("edge, beta, ok", [(1.015, 0.0, True), (1.0, 0.8, True),
                                            (1.03, 0.0, False), (1.0, 1.5, False)])
def test_cell_tolerance(tmp_path, e5z, capsys, edge, beta, ok):
    """Edges within 2 % and angles within 1° of the data's: the data cell is used, with a note;
    beyond: refused with both cells in the message."""
    st = gemmi.read_structure(e5z.model)
    c = st.cell
    st.cell = gemmi.UnitCell(c.a * edge, c.b, c.c, c.alpha, c.beta + beta, c.gamma)
    path = tmp_path / "cell.pdb"
    st.write_pdb(str(path))
    if ok:
        _, log = refine_ok(["refine", path, e5z.data, "--cycles", "1"], capsys, tmp_path / "o")
        assert "using the data cell" in log
        out = gemmi.read_structure(str(tmp_path / "o" / "refined.cif")).cell
        assert out.a == pytest.approx(e5z.cell.a, abs=1e-3)
        assert out.beta == pytest.approx(e5z.cell.beta, abs=1e-3)
    else:
        code, _, err = run(["refine", path, e5z.data, "-o", tmp_path / "o"], capsys)
        refused(code, err, tmp_path / "o", "5e5z.mtz", "cells differ", "at most 2%")
        assert not (tmp_path / "o").exists()


def test_bare_refine_runs_the_xray_preset(e5z, tmp_path, capsys):
    """`refine MODEL DATA` with neither --preset nor --config runs the likelihood protocol
    (ML target, restraints, riding H), not the minimal LS preset a config without a preset
    key gets."""
    s, _ = refine_ok(["refine", e5z.model, e5z.data, "--cycles", "1"], capsys, tmp_path / "o")
    assert s["config"]["preset"] == "xray"
    assert "ml_amplitude_nll" in s["final"] and "rmsd_bonds" in s["final"]
