"""Reciprocal-space bookkeeping (numerics.reflections), French–Wilson and the sf-mmCIF reader."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import erfc, pbdv

from conftest import dataset
from refinekit.plugin_api import ConfigError, InputError, ReflectionData, parse_options, testing
from refinekit.plugin_api.numerics import reflections as rf
from refinekit.plugins.french_wilson.french_wilson import (FrenchWilson, FrenchWilsonOptions,
                                                           french_wilson)
from refinekit.plugins.sfcif_io.sfcif import SfCifReader

SPACEGROUPS = {"P 43": (30.0, 30.0, 40.0, 90, 90, 90), "P 21 21 21": (30.0, 35.0, 40.0, 90, 90, 90),
               "P 65": (40.0, 40.0, 60.0, 90, 90, 120), "C 1 2 1": (50.0, 30.0, 40.0, 90, 105, 90),
               "I 4": (40.0, 40.0, 50.0, 90, 90, 90)}


def all_hkl(sg_name: str, d_min: float = 4.0) -> np.ndarray:
    """Every non-absent reflection in a sphere, every symmetry mate included."""
    sg = gemmi.SpaceGroup(sg_name)
    cell = gemmi.UnitCell(*SPACEGROUPS[sg_name])
    r = 14
    h = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    h = h[np.any(h != 0, axis=1)]
    h = h[cell.calculate_d_array(h.astype(np.int32)) >= d_min].astype(np.int32)
    absent = sg.operations().systematic_absences(h)
    return h[~np.asarray(absent, bool)]


# --------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("sg_name", list(SPACEGROUPS))
def test_epsilon_and_centric_match_gemmi_per_reflection(sg_name):
    sg = gemmi.SpaceGroup(sg_name)
    ops = sg.operations()
    hkl = all_hkl(sg_name)[::7]
    eps, cen = rf.epsilon_and_centric(hkl, sg)
    ref_eps = [ops.epsilon_factor_without_centering(list(map(int, h))) for h in hkl]
    ref_cen = [ops.is_reflection_centric(list(map(int, h))) for h in hkl]
    assert np.array_equal(eps, ref_eps)
    assert np.array_equal(cen, ref_cen)


def test_epsilon_and_centric_known_values():
    eps, cen = rf.epsilon_and_centric(np.array([[0, 0, 4], [1, 2, 0], [1, 2, 3]]), gemmi.SpaceGroup("P 43"))
    assert eps.tolist() == [4, 1, 1]          # 00l on the 4-fold axis
    assert cen.tolist() == [False, True, False]  # hk0 centric (2-fold along c); 00l is not
    eps, cen = rf.epsilon_and_centric(np.array([[0, 0, 6], [2, 0, 1]]), gemmi.SpaceGroup("P 65"))
    assert eps.tolist() == [6, 1] and cen.tolist() == [False, False]


@pytest.mark.parametrize("sg_name", list(SPACEGROUPS))
def test_canonical_hkl_is_a_class_invariant(sg_name):
    """Symmetry mates and Friedel mates share the representative; classes differ."""
    sg = gemmi.SpaceGroup(sg_name)
    hkl = all_hkl(sg_name)
    canon = rf.canonical_hkl(hkl, sg)
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    # gemmi's ASU image (Friedel-reduced) identifies the class independently
    gemmi_class = [tuple(asu.to_asu(list(map(int, h)), ops)[0]) for h in hkl]
    gemmi_class = [max(c, tuple(-x for x in c)) for c in gemmi_class]
    classes = {}
    for c, g in zip(map(tuple, canon), gemmi_class):
        classes.setdefault(g, set()).add(c)
    assert all(len(v) == 1 for v in classes.values())
    assert len({next(iter(v)) for v in classes.values()}) == len(classes)


# --------------------------------------------------------------------------- free flags
def test_free_flags_conventions():
    ccp4 = np.array([0, 5, 19, 3, 0, 12, 7, 0])
    assert rf.interpret_free_flags(ccp4).tolist() == (ccp4 == 0).tolist()
    assert rf.interpret_free_flags(ccp4, "ccp4").tolist() == (ccp4 == 0).tolist()
    phenix = np.array([0] * 19 + [1])
    assert rf.interpret_free_flags(phenix).tolist() == (phenix == 1).tolist()
    assert rf.interpret_free_flags(phenix, "phenix").tolist() == (phenix == 1).tolist()
    ccp4_two = np.array([1] * 19 + [0])                    # 1l2h style: 0 is the small test set
    assert rf.interpret_free_flags(ccp4_two).tolist() == (ccp4_two == 0).tolist()
    status = np.array(["o", "f", "o", "x", "f ", "o"])
    assert rf.interpret_free_flags(status).tolist() == [False, True, False, False, True, False]
    with_nan = np.array([0.0, np.nan, 4.0, 2.0])
    assert rf.interpret_free_flags(with_nan).tolist() == [True, False, False, False]


def test_free_flags_errors():
    with pytest.raises(InputError, match="no reflection in the test set"):
        rf.interpret_free_flags(np.array([1, 2, 3, 4]), "ccp4", "x.mtz")
    with pytest.raises(InputError, match="every reflection"):
        rf.interpret_free_flags(np.zeros(10), "ccp4")
    with pytest.raises(InputError, match="no reflection"):
        rf.interpret_free_flags(np.array(["o", "o"]))
    with pytest.raises(InputError, match="x.mtz"):
        rf.interpret_free_flags(np.zeros(10), "phenix", "x.mtz")
    with pytest.raises(InputError, match="unknown free-flag convention"):
        rf.interpret_free_flags(np.zeros(3), "xplor")


def test_generated_flags_are_stable():
    sg = gemmi.SpaceGroup("P 43")
    hkl = all_hkl("P 43", d_min=2.2)
    asu = gemmi.ReciprocalAsu(sg)
    uniq = np.unique(rf.canonical_hkl(hkl, sg), axis=0)
    flags = rf.generate_free_flags(uniq, sg, fraction=0.05, seed=3)
    assert abs(flags.mean() - 0.05) < 4 * np.sqrt(0.05 * 0.95 / len(uniq))
    perm = np.random.default_rng(0).permutation(len(uniq))
    assert np.array_equal(rf.generate_free_flags(uniq[perm], sg, 0.05, seed=3), flags[perm])
    cut = gemmi.UnitCell(*SPACEGROUPS["P 43"]).calculate_d_array(uniq) > 3.5
    assert np.array_equal(rf.generate_free_flags(uniq[cut], sg, 0.05, seed=3), flags[cut])
    # a file storing other symmetry mates (or Friedel mates) gets the same flags
    ops = sg.operations()
    mates = np.array([ops.sym_ops[1].apply_to_hkl(list(map(int, h))) for h in uniq]) * -1
    assert np.array_equal(rf.generate_free_flags(mates, sg, 0.05, seed=3), flags)
    in_asu = np.array([asu.to_asu(list(map(int, h)), ops)[0] for h in uniq])
    assert np.array_equal(rf.generate_free_flags(in_asu, sg, 0.05, seed=3), flags)
    assert not np.array_equal(rf.generate_free_flags(uniq, sg, 0.05, seed=4), flags)


# --------------------------------------------------------------------------- bins, merging, R
def test_resolution_bins_equal_volume():
    cell = gemmi.UnitCell(*SPACEGROUPS["P 21 21 21"])
    hkl = all_hkl("P 21 21 21", d_min=2.9)   # the sphere fits inside all_hkl's index cube
    d = cell.calculate_d_array(hkl)
    bins = rf.resolution_bins(d, n_bins=8)
    assert bins.min() == 0 and bins.max() == 7
    counts = np.bincount(bins)
    assert counts.min() > 0.8 * counts.mean()            # complete data: ≈ equal counts
    assert np.all(np.diff([d[bins == b].max() for b in range(8)]) < 0)   # bin 0 = low resolution
    auto = rf.resolution_bins(d, min_per_bin=1000)
    assert auto.max() + 1 == min(len(d) // 1000, 20)


def test_merge_friedel_and_pairs():
    mean, sig = rf.merge_friedel(np.array([10.0, np.nan, 4.0, np.nan]), np.array([1.0, np.nan, 2.0, 1.0]),
                                 np.array([12.0, 7.0, np.nan, np.nan]), np.array([1.0, 3.0, 1.0, 1.0]))
    assert np.allclose(mean[:3], [11.0, 7.0, 4.0]) and np.isnan(mean[3])
    assert np.allclose(sig[:3], [np.sqrt(2) / 2, 3.0, 2.0])
    pairs = rf.find_anomalous_pairs(["H", "K", "L", "I(+)", "SIGI(+)", "I(-)", "SIGI(-)", "Fplus", "Fminus",
                                     "pdbx_I_plus_sigma", "pdbx_I_minus_sigma"])
    assert ("I(+)", "I(-)") in pairs and ("SIGI(+)", "SIGI(-)") in pairs
    assert ("Fplus", "Fminus") in pairs and ("pdbx_I_plus_sigma", "pdbx_I_minus_sigma") in pairs
    assert rf.find_anomalous_pairs(["FP", "SIGFP"]) == []


def test_r_factors():
    fo = np.array([10.0, 20.0, 30.0, 40.0])
    fm = np.array([5.5, 9.0, 16.0, 19.0])
    free = np.array([False, False, False, True])
    r = rf.r_factors(fo, fm, free, bins=np.array([0, 0, 1, 1]))
    k = (10 * 5.5 + 20 * 9 + 30 * 16) / (5.5 ** 2 + 81 + 256)
    assert r.scale == pytest.approx(k)
    assert r.r_work == pytest.approx((abs(10 - k * 5.5) + abs(20 - k * 9) + abs(30 - k * 16)) / 60)
    assert r.r_free == pytest.approx(abs(40 - k * 19) / 40)
    assert r.bin_n_work.tolist() == [2, 1] and r.bin_n_free.tolist() == [0, 1]
    assert np.isnan(r.bin_r_free[0])
    unscaled = rf.r_factors(fo, 2 * fm, free, scale=False)
    assert unscaled.r_work == pytest.approx((1 + 2 + 2) / 60)


# --------------------------------------------------------------------------- French–Wilson
def _posterior_reference(i_obs, sig, s, centric):
    """<F>, σF by adaptive quadrature of prior × likelihood in F (no completed square)."""
    if centric:
        log_prior = lambda f: -f * f / (2 * s)                      # noqa: E731
    else:
        log_prior = lambda f: np.log(np.maximum(f, 1e-300)) - f * f / s    # noqa: E731
    log_like = lambda f: -(i_obs - f * f) ** 2 / (2 * sig * sig)    # noqa: E731
    grid = np.linspace(0.0, np.sqrt(max(i_obs, 0) + 12 * sig + 12 * s), 200001)
    peak = grid[np.argmax(log_prior(grid) + log_like(grid))]
    shift = log_prior(peak) + log_like(peak)
    width = sig / (2 * max(peak, np.sqrt(sig)))            # posterior width in F, roughly
    edges = np.clip(peak + width * np.array([-60, -20, -6, -2, 0, 2, 6, 20, 60]), 0, grid[-1])
    edges = np.unique(np.concatenate([[0.0], edges, [grid[-1]]]))
    moments = [sum(quad(lambda f: f ** k * np.exp(log_prior(f) + log_like(f) - shift), a, b,
                        limit=400, epsabs=0, epsrel=1e-13)[0] for a, b in zip(edges, edges[1:]))
               for k in range(3)]
    mean = moments[1] / moments[0]
    return mean, np.sqrt(moments[2] / moments[0] - mean ** 2)


@pytest.mark.parametrize("centric", [False, True])
def test_french_wilson_matches_numerical_integration(centric):
    s = 400.0
    cases = [(-60.0, 20.0), (-30.0, 20.0), (0.0, 20.0), (15.0, 20.0), (80.0, 20.0),
             (400.0, 30.0), (2000.0, 40.0), (1.0e4, 50.0), (-2.0, 1.0), (5.0e4, 5.0)]
    i_obs, sig = np.array(cases).T
    f, sf, _ = french_wilson(i_obs, sig, np.full(len(cases), s), np.full(len(cases), centric))
    for k, (i, sg) in enumerate(cases):
        ref_f, ref_sf = _posterior_reference(i, sg, s, centric)
        assert f[k] == pytest.approx(ref_f, rel=1e-8), (i, sg)
        assert sf[k] == pytest.approx(ref_sf, rel=1e-6), (i, sg)


def test_french_wilson_closed_forms():
    """Acentric <F²> = σ(z + φ(z)/Φ(z)) (truncated normal) and <F> via D_{-3/2} (FW 1978 eq. 9)."""
    z = np.linspace(-6.0, 8.0, 29)
    sig, s = 1.0, 1e300          # σ²/S → 0, so z = I/σ
    f, sf, zz = french_wilson(z * sig, np.full_like(z, sig), np.full_like(z, s), np.zeros(len(z), bool))
    assert np.allclose(zz, z)
    phi_over_cdf = np.sqrt(2 / np.pi) * np.exp(-z * z / 2) / erfc(-z / np.sqrt(2))
    assert np.allclose(sf ** 2 + f ** 2, z + phi_over_cdf, rtol=1e-10)
    d32 = pbdv(-1.5, -z)[0]
    d1 = np.exp(z * z / 4) * np.sqrt(np.pi / 2) * erfc(-z / np.sqrt(2))     # D_{-1}(-z)
    assert np.allclose(f, (np.sqrt(np.pi) / 2) * d32 / d1, rtol=1e-8)


def _toy_data(n=3000, seed=0, centric_sg="P 21 21 21"):
    rng = np.random.default_rng(seed)
    cell = gemmi.UnitCell(*SPACEGROUPS[centric_sg])
    hkl = all_hkl(centric_sg, d_min=1.8)[:n]
    d = cell.calculate_d_array(hkl)
    eps, cen = rf.epsilon_and_centric(hkl, gemmi.SpaceGroup(centric_sg))
    sigma_n = 1000.0 * np.exp(-2 * 15.0 / (4 * d ** 2))       # Wilson B = 15 Å² in intensity
    amp = np.where(cen, np.abs(rng.normal(size=len(d))),
                   np.abs(rng.normal(size=len(d)) + 1j * rng.normal(size=len(d))) / np.sqrt(2))
    j = eps * sigma_n * amp ** 2
    sig_i = 0.05 * j + 0.3 * np.sqrt(sigma_n) + 1.0
    i_obs = j + rng.normal(size=len(d)) * sig_i
    data = ReflectionData(hkl, cell, gemmi.SpaceGroup(centric_sg), i_obs=i_obs, sigma_i=sig_i,
                          source="toy")
    return data, np.sqrt(j)


def test_french_wilson_preparer():
    testing.check_component_class(FrenchWilson)
    testing.check_options(FrenchWilson)
    data, f_true = _toy_data()
    data.i_obs[:3] = [np.nan, -50 * data.sigma_i[1], 0.0]
    out, stats = FrenchWilson().prepare(data)
    assert stats["n_missing"] == 1 and stats["n_rejected"] == 1
    assert stats["n_output"] == len(data) - 2 == len(out)
    assert np.array_equal(out.index, np.arange(len(out)))   # rows of the new data set
    assert np.all(out.f_obs > 0) and np.all(out.sigma_f > 0)
    kept = np.isfinite(data.i_obs) & (data.i_obs >= -4 * data.sigma_i)
    kept[1] = False
    # for weak data the posterior mean estimates the true F far better than √max(I, 0)
    weak = data.i_obs[kept] < 2 * data.sigma_i[kept]
    naive = np.sqrt(np.maximum(data.i_obs[kept], 0.0))
    err_fw = np.mean((out.f_obs - f_true[kept])[weak] ** 2)
    err_naive = np.mean((naive - f_true[kept])[weak] ** 2)
    assert weak.sum() > 100 and err_fw < 0.6 * err_naive
    assert np.array_equal(out.i_obs, data.i_obs[kept])
    with pytest.raises(InputError, match="intensities"):
        FrenchWilson().prepare(ReflectionData(data.hkl, data.cell, data.spacegroup))
    with pytest.raises(ConfigError):
        parse_options(FrenchWilsonOptions, {"min_per_bin": 0}, "data.french-wilson")


def test_french_wilson_on_1l2h():
    mtz = gemmi.read_mtz_file(str(dataset("1l2h", "1l2h.mtz")))
    arr = np.asarray(mtz)
    lab = mtz.column_labels()
    data = ReflectionData(arr[:, :3], mtz.cell, mtz.spacegroup, i_obs=arr[:, lab.index("IMEAN")],
                          sigma_i=arr[:, lab.index("SIGIMEAN")],
                          free=rf.interpret_free_flags(arr[:, lab.index("FreeR_flag")]))
    out, stats = FrenchWilson().prepare(data)
    assert stats["n_output"] > 0.99 * len(data)
    ratio = out.f_obs / np.sqrt(np.maximum(out.i_obs, 1e-30))
    assert np.max(np.abs(ratio[out.i_obs > 30 * out.sigma_i] - 1)) < 0.01   # strong: <F> ≈ √I
    assert np.median(np.abs(ratio[out.i_obs > 10 * out.sigma_i] - 1)) < 0.002
    assert np.all(np.isfinite(out.f_obs)) and np.all(out.sigma_f > 0)


# --------------------------------------------------------------------------- sf-mmCIF
def test_read_sf_mmcif_neutron():
    data = SfCifReader().read(str(dataset("1v9g_neutron", "1v9g-sf.cif")))
    assert data.spacegroup.hm == "P 21 21 21"
    assert data.cell.a == pytest.approx(18.46)
    assert len(data) == 2921 and data.free.sum() == 268
    assert data.columns["free"] == "status 'f'"
    assert np.all(np.isfinite(data.f_obs)) and np.all(data.sigma_f >= 0)
    assert np.all(np.isfinite(data.i_obs))
    # the deposited F column holds F = 0, σ = 0 where I < 0 (151 of them): use I with french-wilson
    assert np.count_nonzero((data.f_obs == 0) & (data.sigma_f == 0)) == 151


def test_read_sf_mmcif_microed_generates_flags():
    path = str(dataset("6mw0_microed", "6mw0-sf.cif"))
    data = SfCifReader().read(path)
    assert data.spacegroup.hm == "P 21 21 21" and data.cell.a == pytest.approx(8.291)
    assert len(data) == 4864 and np.count_nonzero(np.isfinite(data.f_obs)) == 4832
    # the file has status 'o'/'x' only: flags are generated, stable, ~5 %
    assert data.columns["free"].startswith("generated")
    assert np.array_equal(data.free, rf.generate_free_flags(data.hkl, data.spacegroup))
    assert 0.03 < data.free.mean() < 0.07
    assert data.resolution()[1] == pytest.approx(0.78, abs=0.01)


def test_read_sf_mmcif_errors(tmp_path):
    src = dataset("1v9g_neutron", "1v9g-sf.cif").read_text()
    bad = tmp_path / "nocols-sf.cif"
    bad.write_text(src.replace("_refln.F_meas_au", "_refln.F_x").replace("_refln.intensity_meas", "_refln.I_x"))
    with pytest.raises(InputError, match=r"nocols-sf\.cif.*F_meas_au.*intensity_meas"):
        SfCifReader().read(str(bad))
    with pytest.raises(InputError, match="not a readable mmCIF"):
        (tmp_path / "junk.cif").write_text("this is not cif ' \n")
        SfCifReader().read(str(tmp_path / "junk.cif"))
    st = tmp_path / "model.cif"
    st.write_text("data_x\n_cell.length_a 10\n")
    with pytest.raises(InputError, match="no block with merged reflections"):
        SfCifReader().read(str(st))


def test_read_sf_mmcif_named_columns():
    path = str(dataset("1v9g_neutron", "1v9g-sf.cif"))
    data = SfCifReader().read(path, columns={"i": "_refln.intensity_meas", "sigi": "intensity_sigma"})
    assert data.columns["i"] == "intensity_meas" and np.all(np.isfinite(data.i_obs))
    with pytest.raises(InputError, match=r"1v9g-sf\.cif.*_refln\.I_missing"):
        SfCifReader().read(path, columns={"i": "I_missing"})


def test_read_sf_mmcif_merges_friedel_mates(tmp_path):
    """Only pdbx_I_plus/minus present: the reader returns their mean (columns relabelled from 1v9g)."""
    src = dataset("1v9g_neutron", "1v9g-sf.cif")
    ref = SfCifReader().read(str(src))
    text = src.read_text()
    for old, new in (("intensity_meas", "pdbx_I_plus"), ("intensity_sigma", "pdbx_I_plus_sigma"),
                     ("F_meas_au", "pdbx_I_minus"), ("F_meas_sigma_au", "pdbx_I_minus_sigma")):
        text = text.replace(f"_refln.{old}", f"_refln.{new}")
    path = tmp_path / "anom-sf.cif"
    path.write_text(text)
    data = SfCifReader().read(str(path))
    assert data.f_obs is None and data.columns["i"].startswith("mean of pdbx_I_plus")
    assert np.allclose(data.i_obs, 0.5 * (ref.i_obs + ref.f_obs))
    assert np.allclose(data.sigma_i, 0.5 * np.hypot(ref.sigma_i, ref.sigma_f))
