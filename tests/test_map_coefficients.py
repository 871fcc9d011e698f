"""σA-weighted map coefficients of the ML targets (Read 1986) and the french-wilson skip/override option.

Real kernel runs on 1l2h (deposited model, French–Wilson amplitudes, bulk-solvent + anisotropic
scales fitted once); maps are computed by gemmi from the MTZ written by the project's writer.
"""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from scipy.special import iv

from conftest import dataset
from refinekit.config import build_config
from refinekit.engine import Run
from refinekit.io import read_model, read_reflections
from refinekit.plugin_api import InputError, ReflectionData
from refinekit.plugin_api.numerics import reflections as rf
from refinekit.plugins.french_wilson.french_wilson import FrenchWilson, FrenchWilsonOptions
from refinekit.plugins.mtz_io.mtz import MtzWriter
from refinekit.registry import Registry

LABELS = {"FWT": "F", "PHWT": "P", "DELFWT": "F", "PHDELWT": "P", "FC": "F", "PHIC": "P", "FOM": "W"}


def make_run(registry, data, term):
    cfg = build_config({"terms": {term: {}}, "scalers": {"bulk-solvent": {}, "aniso-scale": {}}}, registry)
    run = Run(registry, cfg, read_model(registry, dataset("1l2h", "1l2h.cif")), data, log=lambda m: None)
    run.set_stage(None)
    return run


@pytest.fixture(scope="module")
def l2h():
    registry = Registry.discover()
    raw = read_reflections(registry, dataset("1l2h", "1l2h.mtz"))
    data, _ = registry.create("preparer", "french-wilson").prepare(raw)
    data.index = np.arange(len(data))
    run = make_run(registry, data, "ml-amplitude")
    for name in ("bulk-solvent", "aniso-scale"):
        run.scaler(name).fit(run)
    term = run.terms["ml-amplitude"]
    term.setup(run)
    return registry, raw, run, term


def columns_dict(cols):
    return {label: (ctype, values) for label, ctype, values in cols.columns}


def write_and_read(cols, tmp_path):
    path = str(tmp_path / "maps.mtz")
    MtzWriter().write(cols, path)
    return gemmi.read_mtz_file(path)


def map_cc(mtz, f, phi, ref_f="FC", ref_phi="PHIC"):
    a = np.array(mtz.transform_f_phi_to_map(f, phi, sample_rate=3), copy=False)
    b = np.array(mtz.transform_f_phi_to_map(ref_f, ref_phi, sample_rate=3), copy=False)
    assert a.shape == b.shape
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_fom_and_maps_of_deposited_model(l2h, tmp_path):
    _, _, run, term = l2h
    cols = term.map_coefficients(run.model)
    c = columns_dict(cols)
    assert [label for label, _, _ in cols.columns] == list(LABELS)
    assert len(cols.hkl) == len(run.data)                       # every reflection, free ones included
    fom = c["FOM"][1]
    assert np.all((fom >= 0) & (fom <= 1)) and fom.mean() > 0.5
    # FC/PHIC are the engine's unscaled F_calc
    fc = term.engine.calc(run.model, run.data.hkl)
    assert np.allclose(c["FC"][1], np.abs(fc)) and np.allclose(c["PHIC"][1], np.degrees(np.angle(fc)))
    mtz = write_and_read(cols, tmp_path)
    assert {col.label: col.type for col in mtz.columns if col.label not in "HKL"} == LABELS
    assert mtz.nreflections == len(run.data)
    cc_2fofc = map_cc(mtz, "FWT", "PHWT")
    cc_fofc = map_cc(mtz, "DELFWT", "PHDELWT")
    print(f"mean FOM {fom.mean():.3f}, CC(2mFo-DFc, Fc) {cc_2fofc:.3f}, CC(mFo-DFc, Fc) {cc_fofc:.3f}")
    assert cc_2fofc > 0.8 and abs(cc_fofc) < 0.2


def test_coefficients_follow_read_1986(l2h):
    """Column values against the formulas, acentric and centric, done independently here."""
    _, _, run, term = l2h
    c = columns_dict(term.map_coefficients(run.model))
    data = run.data
    k, f_part = run.fmodel_scales(data)
    fm = k * (term.engine.calc(run.model, data.hkl) + f_part)
    d_par, s_par = term.sigmaa.at(data.d)
    eps, cen = rf.epsilon_and_centric(data.hkl, data.spacegroup)
    assert 0 < cen.sum() < len(cen)
    a = d_par * np.abs(fm)
    var = eps * s_par + np.where(cen, 1.0, 2.0) * data.sigma_f ** 2
    x = 2 * data.f_obs * a / var
    m = np.where(cen, np.tanh(x / 2), iv(1, np.minimum(x, 700)) / iv(0, np.minimum(x, 700)))
    small = x < 700                          # scipy's unscaled I_ν overflow beyond
    assert np.allclose(c["FOM"][1][small], m[small], rtol=1e-10)
    phase = np.exp(1j * np.angle(fm))
    fwt = np.where(cen, m * data.f_obs, 2 * m * data.f_obs - a) * phase
    delfwt = (m * data.f_obs - a) * phase
    got_fwt = c["FWT"][1] * np.exp(1j * np.radians(c["PHWT"][1]))
    got_del = c["DELFWT"][1] * np.exp(1j * np.radians(c["PHDELWT"][1]))
    assert np.allclose(got_fwt, fwt, atol=1e-8 * np.abs(fwt).max())
    assert np.allclose(got_del, delfwt, atol=1e-8 * np.abs(delfwt).max())


def test_missing_amplitudes_are_filled_in():
    rng = np.random.default_rng(3)
    n = 50
    fo = rng.uniform(10, 100, n)
    fo[:5] = np.nan
    fm = rng.normal(size=n) * 50 + 1j * rng.normal(size=n) * 50
    d, s = np.full(n, 0.8), np.full(n, 300.0)
    fwt, delfwt, fom = rf.sigmaa_map_coefficients(fo, np.full(n, np.nan), fm, d, s, np.ones(n), np.zeros(n, bool))
    assert np.allclose(fwt[:5], 0.8 * fm[:5]) and np.all(delfwt[:5] == 0) and np.all(fom[:5] == 0)
    assert np.all(np.isfinite(fwt)) and np.all(fom[5:] > 0)


def test_perturbed_model_has_lower_fom(l2h):
    _, _, run, term = l2h
    fom_true = columns_dict(term.map_coefficients(run.model))["FOM"][1].mean()
    deposited = run.model
    bad = deposited.copy()
    bad.xyz += np.random.default_rng(0).normal(scale=0.3 / np.sqrt(3), size=bad.xyz.shape)  # 0.3 Å rms
    bad.mark_changed()
    run.model = bad
    try:
        pert = type(term)(term.options)
        pert.setup(run)                                  # σA refitted for the perturbed model
        fom_bad = columns_dict(pert.map_coefficients(bad))["FOM"][1].mean()
    finally:
        run.model = deposited
    print(f"mean FOM deposited {fom_true:.3f}, perturbed {fom_bad:.3f}")
    assert fom_bad < fom_true - 0.05


@pytest.mark.parametrize("amplitudes", ["french-wilson", "sqrt-intensity"])
def test_ml_intensity_map_coefficients(l2h, tmp_path, amplitudes):
    registry, raw, run_a, _ = l2h
    data = run_a.data if amplitudes == "french-wilson" else raw
    assert len(raw) == len(run_a.data)                   # FW kept every reflection: same rows, same scales
    run = make_run(registry, data, "ml-intensity")
    run.set_fmodel_scales(*run_a.fmodel_scales(run_a.data))
    term = run.terms["ml-intensity"]
    term.setup(run)
    cols = term.map_coefficients(run.model)
    fom = columns_dict(cols)["FOM"][1]
    assert len(cols.hkl) == len(data) and np.all((fom >= 0) & (fom <= 1)) and fom.mean() > 0.5
    mtz = write_and_read(cols, tmp_path)
    cc_2fofc, cc_fofc = map_cc(mtz, "FWT", "PHWT"), map_cc(mtz, "DELFWT", "PHDELWT")
    print(f"ml-intensity ({amplitudes}): mean FOM {fom.mean():.3f}, CC {cc_2fofc:.3f}, {cc_fofc:.3f}")
    assert cc_2fofc > 0.8 and abs(cc_fofc) < 0.2


# --------------------------------------------------------------------------- french-wilson options
def test_french_wilson_skips_data_with_amplitudes(l2h):
    _, raw, run, _ = l2h
    fw_data = run.data                                   # has f_obs (and i_obs)
    out, figures = FrenchWilson().prepare(fw_data)
    assert out is fw_data and figures == {"skipped": "amplitudes present"}
    amp_only = ReflectionData(raw.hkl, raw.cell, raw.spacegroup, f_obs=np.ones(len(raw)))
    out, figures = FrenchWilson().prepare(amp_only)
    assert out is amp_only and figures == {"skipped": "amplitudes present"}
    # overriding needs intensities
    with pytest.raises(InputError, match="override_amplitudes"):
        FrenchWilson(FrenchWilsonOptions(override_amplitudes=True)).prepare(amp_only)


def test_french_wilson_override_replaces_amplitudes(l2h):
    _, raw, _, _ = l2h
    both = raw.subset(np.ones(len(raw), bool))
    both.f_obs = np.full(len(raw), 7.0)
    both.sigma_f = np.full(len(raw), 1.0)
    out, figures = FrenchWilson(FrenchWilsonOptions(override_amplitudes=True)).prepare(both)
    reference, _ = FrenchWilson().prepare(raw)
    assert "skipped" not in figures and figures["n_output"] == len(reference)
    assert np.array_equal(out.f_obs, reference.f_obs) and np.array_equal(out.sigma_f, reference.sigma_f)
