"""ML amplitude and intensity targets: derivatives, σA fit, behaviour on real data."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from conftest import dataset
from refinekit.plugin_api import AtomModel, ReflectionData, testing
from refinekit.plugin_api.numerics import reflections as rf
from refinekit.plugins.aniso_scale.scaler import AnisoScaler
from refinekit.plugins.bulk_solvent.scaler import BulkSolventScaler
from refinekit.plugins.french_wilson.french_wilson import FrenchWilson
from refinekit.plugins.ml_amplitude.ml_amplitude import AmplitudeLikelihood, MLAmplitude
from refinekit.plugins.ml_intensity.ml_intensity import IntensityLikelihood, MLIntensity


# --------------------------------------------------------------------------- synthetic sets
def synthetic(n=400, seed=0, centric_fraction=0.35):
    """Random observations, model F, D and σ_Δ² covering weak/strong/negative/noisy cases."""
    rng = np.random.default_rng(seed)
    cen = rng.random(n) < centric_fraction
    eps = rng.choice([1, 2, 4], n)
    d = rng.uniform(0.3, 1.0, n)
    s = rng.uniform(100.0, 2000.0, n)
    f_true = rng.gamma(2.0, 30.0, n)
    sig_i = rng.uniform(0.02, 1.5, n) * np.sqrt(np.maximum(f_true ** 2, 50.0)) * rng.choice([1, 5, 30], n)
    i_obs = f_true ** 2 + rng.normal(size=n) * sig_i
    i_obs[:6] = -3.0 * sig_i[:6]
    sig_f = rng.uniform(0.0, 5.0, n)
    sig_f[:3] = 0.0
    f_obs = np.abs(f_true + rng.normal(size=n) * sig_f)
    f_obs[3] = 0.0
    f_model = 40.0 * (rng.normal(size=n) + 1j * rng.normal(size=n))
    return dict(cen=cen, eps=eps, d=d, s=s, i_obs=i_obs, sig_i=sig_i, f_obs=f_obs, sig_f=sig_f, fm=f_model)


def fd_complex(value_per_refl, fm, h=1e-5):
    """Central differences of per-reflection values w.r.t. Re F and Im F (all at once)."""
    out = []
    for step in (h, 1j * h):
        out.append((value_per_refl(fm + step) - value_per_refl(fm - step)) / (2 * h))
    return out[0] + 1j * out[1]


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


LIKELIHOODS = {
    "amplitude": lambda z: AmplitudeLikelihood(z["f_obs"], z["sig_f"], z["eps"], z["cen"]),
    "intensity": lambda z: IntensityLikelihood(z["i_obs"], z["sig_i"], z["eps"], z["cen"]),
}


@pytest.mark.parametrize("kind", list(LIKELIHOODS))
@pytest.mark.parametrize("centric", [False, True])
def test_dT_dF_matches_finite_differences(kind, centric):
    z = synthetic()
    z["cen"][:] = centric
    lik = LIKELIHOODS[kind](z)
    res = lik.target(z["fm"], z["d"], z["s"], want_grad=True, want_curv=True)
    fd = fd_complex(lambda f: lik.evaluate(np.abs(f), z["d"], z["s"])[0], z["fm"])
    assert rel(res.dT_dF, fd) < 1e-6
    assert np.max(np.abs(res.dT_dF - fd) / (np.abs(fd) + 1e-3 * np.abs(fd).mean())) < 1e-4
    # the summed value is the sum of the per-reflection terms: spot-check through target()
    for i in (0, 7, 50):
        e = np.zeros(len(z["fm"]))
        e[i] = 1e-5
        for step, part in ((e, res.dT_dF.real[i]), (1j * e, res.dT_dF.imag[i])):
            up = lik.target(z["fm"] + step, z["d"], z["s"], False, False).value
            down = lik.target(z["fm"] - step, z["d"], z["s"], False, False).value
            assert (up - down) / 2e-5 == pytest.approx(part, rel=1e-4, abs=1e-7)
    assert np.all(res.curvature >= 0) and np.all(np.isfinite(res.curvature))


@pytest.mark.parametrize("centric", [False, True])
def test_amplitude_likelihood_is_the_rice_or_folded_normal_law(centric):
    """−ln p with the Fo-only term restored equals scipy's Rice / folded-normal log-density."""
    from scipy.stats import foldnorm, rice
    z = synthetic(n=300, seed=9)
    z["cen"][:] = centric
    lik = AmplitudeLikelihood(z["f_obs"] + 1.0, z["sig_f"], z["eps"], z["cen"])
    t = lik.evaluate(np.abs(z["fm"]), z["d"], z["s"])[0]
    sig2 = lik.variance(z["s"])
    a = z["d"] * np.abs(z["fm"])
    fo = lik.f_obs
    if centric:
        ref = foldnorm.logpdf(fo, a / np.sqrt(sig2), scale=np.sqrt(sig2))
    else:
        scale = np.sqrt(sig2 / 2)
        ref = rice.logpdf(fo, a / scale, scale=scale)
    assert np.allclose(-t + rf.rice_data_term(fo, z["cen"]), ref, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("kind", list(LIKELIHOODS))
def test_parameter_derivatives(kind):
    """∂T/∂D and ∂T/∂σ_Δ² (used by the σA fit) against finite differences."""
    z = synthetic(seed=2)
    lik = LIKELIHOODS[kind](z)
    fc = np.abs(z["fm"])
    _, _, g_d, g_s = lik.evaluate(fc, z["d"], z["s"])
    fd_d = (lik.evaluate(fc, z["d"] + 1e-6, z["s"])[0] - lik.evaluate(fc, z["d"] - 1e-6, z["s"])[0]) / 2e-6
    hs = 1e-6 * z["s"]
    fd_s = (lik.evaluate(fc, z["d"], z["s"] + hs)[0] - lik.evaluate(fc, z["d"], z["s"] - hs)[0]) / (2 * hs)
    assert rel(g_d, fd_d) < 1e-5 and rel(g_s, fd_s) < 1e-5


def test_intensity_likelihood_against_dense_quadrature():
    """T = −ln ∫ N(Io; F², σ²) p_Rice(F) dF vs a 200 001-point trapezoid rule."""
    from scipy.special import i0e
    z = synthetic(n=60, seed=5)
    lik = IntensityLikelihood(z["i_obs"], z["sig_i"], z["eps"], z["cen"])
    t = lik.evaluate(np.abs(z["fm"]), z["d"], z["s"])[0]
    for i in range(len(t)):
        a, s2, io, sg = z["d"][i] * abs(z["fm"][i]), z["eps"][i] * z["s"][i], z["i_obs"][i], z["sig_i"][i]
        u = np.linspace(1e-9, np.sqrt(max(io, 0) + 30 * sg) + a + 20 * np.sqrt(s2), 200001)
        if z["cen"][i]:
            lp = 0.5 * np.log(2 / (np.pi * s2)) - (u * u + a * a) / (2 * s2) + rf.log_cosh(u * a / s2)
        else:
            lp = np.log(2 * u / s2) - (u - a) ** 2 / s2 + np.log(i0e(2 * u * a / s2))
        g = lp - (io - u * u) ** 2 / (2 * sg * sg)
        ref = -(np.log(np.trapezoid(np.exp(g - g.max()), u)) + g.max())
        assert t[i] == pytest.approx(ref, abs=1e-5)   # the reference rule is good to ~1e-6


def test_intensity_target_tends_to_amplitude_target_for_precise_data():
    """σ_I → 0: ∂T_I/∂F equals the amplitude target's with Fo = √Io, σ_F = 0."""
    z = synthetic(n=200, seed=3)
    f_obs = np.abs(z["f_obs"]) + 5.0
    amp = AmplitudeLikelihood(f_obs, np.zeros(200), z["eps"], z["cen"])
    inten = IntensityLikelihood(f_obs ** 2, 1e-4 * f_obs ** 2, z["eps"], z["cen"])
    g_a = amp.target(z["fm"], z["d"], z["s"], True, False).dT_dF
    g_i = inten.target(z["fm"], z["d"], z["s"], True, False).dT_dF
    assert rel(g_i, g_a) < 1e-3


@pytest.mark.parametrize("centric", [False, True])
def test_curvature_is_the_fisher_information(centric):
    """E_Fo[(∂T/∂|F|)²] over data simulated from the model = information used for curvature."""
    rng = np.random.default_rng(11)
    n_draw, a_values = 40000, np.array([0.0, 5.0, 20.0, 60.0])
    sigma2, d = 400.0, 0.8
    for a in a_values:
        fc = np.full(n_draw, a / d)
        noise = rng.normal(size=n_draw) * np.sqrt(sigma2 if centric else sigma2 / 2)
        if centric:
            f_obs = np.abs(a + noise)
        else:
            f_obs = np.abs(a + noise + 1j * rng.normal(size=n_draw) * np.sqrt(sigma2 / 2))
        lik = AmplitudeLikelihood(f_obs, np.zeros(n_draw), np.ones(n_draw), np.full(n_draw, centric))
        _, g_fc, _, _ = lik.evaluate(fc, d, sigma2)
        expected = np.mean(g_fc ** 2)
        res = lik.target(fc.astype(complex), np.full(n_draw, d), np.full(n_draw, sigma2), False, True)
        info = res.curvature[0] / (1.0 if centric else 0.5)
        assert info == pytest.approx(expected, rel=0.03, abs=1e-6)


def test_sigmaa_fit_recovers_simulated_parameters():
    """F_true = D·F_c + complex Gaussian error of variance ε·σ_Δ²: the fit returns D, σ_Δ²."""
    rng = np.random.default_rng(4)
    sg = gemmi.SpaceGroup("P 21 21 21")
    cell = gemmi.UnitCell(40, 50, 60, 90, 90, 90)
    r = 20
    hkl = np.stack(np.meshgrid(*[np.arange(0, r)] * 3, indexing="ij"), -1).reshape(-1, 3)[1:]
    d_sp = cell.calculate_d_array(hkl.astype(np.int32))
    hkl, d_sp = hkl[d_sp > 2.2], d_sp[d_sp > 2.2]
    eps, cen = rf.epsilon_and_centric(hkl, sg)
    n = len(hkl)
    true_d = 0.9 * np.exp(-0.5 * 20 / (4 * d_sp ** 2))    # Luzzati-like decay, 0.2 Å² error
    true_s = 300.0 * np.ones(n)
    fc = 30.0 * np.where(cen, np.sqrt(2) * rng.normal(size=n), rng.normal(size=n) + 1j * rng.normal(size=n))
    err = np.where(cen, rng.normal(size=n) * np.sqrt(eps * true_s),
                   (rng.normal(size=n) + 1j * rng.normal(size=n)) * np.sqrt(eps * true_s / 2))
    f_obs = np.abs(true_d * fc + err)
    lik = AmplitudeLikelihood(f_obs, np.zeros(n), eps, cen)
    par = lik.fit(np.abs(fc), d_sp, "free", min_per_bin=400, max_bins=10)
    got_d, got_s = par.at(d_sp)
    assert np.sqrt(np.mean((got_d - true_d) ** 2)) < 0.03
    assert np.median(np.abs(got_s / true_s - 1)) < 0.08
    assert np.all(np.diff(par.d_values) < 0.05)


# --------------------------------------------------------------------------- real data
class GemmiFcalc:
    """Reference F_calc by gemmi (test-only): density with Refmac blur, FFT, unblur."""

    def calc(self, model: AtomModel, hkl: np.ndarray) -> np.ndarray:
        st = model.to_structure()
        hkl = np.asarray(hkl, dtype=np.int32)
        dc = gemmi.DensityCalculatorX()
        dc.d_min = float(np.min(1.0 / np.sqrt(st.cell.calculate_1_d2_array(hkl))))
        dc.rate = 1.5
        dc.set_refmac_compatible_blur(st[0])
        dc.set_grid_cell_and_spacegroup(st)
        dc.put_model_density_on_grid(st[0])
        grid = gemmi.transform_map_to_f_phi(dc.grid)
        return np.asarray(grid.get_value_by_hkl(hkl)) * np.exp(dc.blur * st.cell.calculate_1_d2_array(hkl) / 4)


class FakeContext:
    """What FTarget.setup uses from the kernel's Context (indices follow ReflectionData.index)."""

    def __init__(self, model, data, fcalc, k_total=None, f_part=None):
        self.model, self.data, self.fcalc, self.cycle, self.options = model, data, fcalc, 0, {}
        self.k_total = np.ones(len(data)) if k_total is None else k_total
        self.f_part = np.zeros(len(data), complex) if f_part is None else f_part
        self.messages = []

    def working_reflections(self):
        obs = self.data.f_obs if self.data.f_obs is not None else self.data.i_obs
        return self.data.subset(~self.data.free & np.isfinite(obs))

    def free_reflections(self):
        return self.data.subset(self.data.free)

    def fmodel_scales(self, refl):
        return self.k_total[refl.index], self.f_part[refl.index]

    def set_fmodel_scales(self, k_total, f_part):
        self.k_total, self.f_part = np.asarray(k_total, float), np.asarray(f_part, complex)

    def log(self, message):
        self.messages.append(message)


@pytest.fixture(scope="module")
def l2h():
    mtz = gemmi.read_mtz_file(str(dataset("1l2h", "1l2h.mtz")))
    arr = np.asarray(mtz)
    lab = mtz.column_labels()
    raw = ReflectionData(arr[:, :3], mtz.cell, mtz.spacegroup, i_obs=arr[:, lab.index("IMEAN")],
                         sigma_i=arr[:, lab.index("SIGIMEAN")],
                         free=rf.interpret_free_flags(arr[:, lab.index("FreeR_flag")]))
    data, _ = FrenchWilson().prepare(raw)
    st = gemmi.read_structure(str(dataset("1l2h", "1l2h.cif")))
    st.setup_entities()
    model = AtomModel.from_structure(st)
    fcalc = GemmiFcalc()
    # F_model scales (bulk solvent + anisotropic scale) from the project's scalers, one round
    ctx = FakeContext(model, data, fcalc)
    figures = BulkSolventScaler().fit(ctx) | AnisoScaler().fit(ctx)
    assert figures["r_work"] < 0.27                       # catalogue's quick R: 0.253
    bad = model.copy()
    bad.xyz += np.random.default_rng(0).normal(scale=0.25, size=bad.xyz.shape)
    return data, model, bad, fcalc, ctx.k_total, ctx.f_part


@pytest.mark.parametrize("cls", [MLAmplitude, MLIntensity])
def test_ml_target_on_1l2h(l2h, cls):
    testing.check_component_class(cls)
    testing.check_options(cls)
    data, model, bad, fcalc, k, f_part = l2h
    terms = {}
    for name, m in (("true", model), ("perturbed", bad)):
        terms[name] = cls()
        terms[name].setup(FakeContext(m, data, fcalc, k, f_part))
        assert terms[name].sigmaa.used_set == "free"
    true, pert = terms["true"], terms["perturbed"]
    # the likelihood prefers the deposited model (each with its own fitted D, σ_Δ)
    assert true.evaluate(model, want_grad=False).value < pert.evaluate(bad, want_grad=False).value
    d_true, d_pert = true.sigmaa.d_values, pert.sigmaa.d_values
    assert np.all(d_true > 0) and np.all(d_true <= 1.0)
    n = len(d_true)
    # D falls with resolution (shell 0 = lowest resolution), and more so for the 0.43 Å rms model
    assert np.corrcoef(np.arange(n), d_true)[0, 1] < -0.6
    assert d_true[-3:].mean() < d_true[:3].mean() - 0.1
    assert np.corrcoef(np.arange(n), d_pert)[0, 1] < -0.9
    assert np.all(d_pert[n // 2:] < d_true[n // 2:])
    stats = true.statistics(model)
    assert stats["r_work"] == pytest.approx(0.258, abs=0.01) and stats["r_free"] == pytest.approx(0.279, abs=0.01)


def test_small_free_set_falls_back_to_all_reflections(l2h):
    data, model, _, fcalc, k, f_part = l2h
    small = data.subset(np.arange(len(data)) % 10 == 0)     # ~150 free reflections
    small.index = np.arange(len(small))
    ctx = FakeContext(model, small, fcalc, k[::10], f_part[::10])
    term = MLAmplitude()
    term.setup(ctx)
    assert term.sigmaa.used_set == "all"
    assert any("min_free" in m for m in ctx.messages)
    assert np.all(term.sigmaa.d_values > 0) and np.all(term.sigmaa.d_values <= 1.0)


# --------------------------------------------------------------------------- through the FFT engine
@pytest.fixture(scope="module")
def e5z():
    fft = pytest.importorskip("refinekit.plugins.fcalc_fft.engine")
    tables = pytest.importorskip("refinekit.plugins.xray_tables.table")
    mtz = gemmi.read_mtz_file(str(dataset("5e5z", "5e5z.mtz")))
    arr = np.asarray(mtz)
    lab = mtz.column_labels()
    col = {name: arr[:, lab.index(name)] for name in ("FP", "SIGFP", "I", "SIGI", "FREE")}
    data = ReflectionData(arr[:, :3], mtz.cell, mtz.spacegroup, f_obs=col["FP"], sigma_f=col["SIGFP"],
                          i_obs=col["I"], sigma_i=col["SIGI"], free=rf.interpret_free_flags(col["FREE"]))
    st = gemmi.read_structure(str(dataset("5e5z", "5e5z.pdb")))
    st.setup_entities()
    model = AtomModel.from_structure(st)
    engine = fft.FftFcalc()
    engine.use_table(tables.XrayTable())
    fc = np.abs(engine.calc(model, data.hkl))
    ok = np.isfinite(data.f_obs) & ~data.free
    k = np.full(len(data), np.sum(data.f_obs[ok] * fc[ok]) / np.sum(fc[ok] ** 2))
    return model, data, engine, k


@pytest.mark.parametrize("cls", [MLAmplitude, MLIntensity])
def test_atom_gradient_through_fft_engine(e5z, cls):
    """check_term_gradient on 5e5z (441 reflections, P2₁): xyz and B through the FFT adjoint."""
    model, data, engine, k = e5z
    ctx = FakeContext(model, data, engine, k)
    term = cls()
    term.setup(ctx)
    assert term.sigmaa.used_set == "all"          # 5e5z has only ~20 free reflections
    report = testing.check_term_gradient(term, model, fields=("xyz", "b_iso", "occ"), n_samples=5)
    assert report.ok, report


def test_kernel_bessel_functions_match_scipy():
    from scipy.special import i0e, i1e
    from refinekit.plugins.ml_intensity.kernels import bessel_i0e_i1e
    x = np.concatenate([np.linspace(0.0, 40.0, 2001), np.geomspace(1e-8, 1e6, 300)])
    got = np.array([bessel_i0e_i1e(v) for v in x])
    assert np.max(np.abs(got[:, 0] / i0e(x) - 1)) < 1e-13
    pos = x > 0
    assert np.max(np.abs(got[pos, 1] / i1e(x[pos]) - 1)) < 1e-13
    assert got[0, 1] == 0.0


@pytest.mark.parametrize("cls", [MLAmplitude, MLIntensity, "ls"])
def test_atom_curvature_is_close_to_the_second_derivative(l2h, cls):
    """The atomic curvature of each structure-factor target (diagonal Fisher, random-phase
    approximation: ``atom_fisher_diagonal`` from the target's per-reflection curvature) against
    central differences of the gradient (FFT engine) for xyz and B of 8 atoms of 1l2h: the
    same size on average (the observed second derivative of one atom scatters around its
    expectation: ml-amplitude's measured ratios 0.95–1.95 for xyz, 0.67–2.1 for B but one atom
    at 6.9), always positive."""
    if cls == "ls":
        cls = pytest.importorskip("refinekit.plugins.ls.target").LeastSquaresTarget
    fft = pytest.importorskip("refinekit.plugins.fcalc_fft.engine")
    tables = pytest.importorskip("refinekit.plugins.xray_tables.table")
    data, model, _, _, k, f_part = l2h
    model = model.copy()
    engine = fft.FftFcalc()
    engine.use_table(tables.XrayTable())
    term = cls()
    term.setup(FakeContext(model, data, engine, k, f_part))
    curv = term.evaluate(model, want_grad=False, want_curv=True).curvature
    assert np.all(curv.xyz > 0) and np.all(curv.b_iso > 0)
    ratios = {"xyz": [], "b_iso": []}
    for j in np.random.default_rng(5).choice(model.n_atoms, 8, replace=False):
        for field, h in (("xyz", 0.01), ("b_iso", 0.5)):
            arr = model.xyz[j] if field == "xyz" else model.b_iso[j:j + 1]
            grads = []
            for sign in (1, -1):
                arr[0] += sign * h
                model.mark_changed()
                g = term.evaluate(model).gradient
                grads.append(g.xyz[j, 0] if field == "xyz" else g.b_iso[j])
                arr[0] -= sign * h
            model.mark_changed()
            fd = (grads[0] - grads[1]) / (2 * h)
            ratios[field].append((curv.xyz[j, 0] if field == "xyz" else curv.b_iso[j]) / fd)
    print(cls.__name__, {f: np.round(np.median(r), 2) for f, r in ratios.items()})
    for field, r in ratios.items():
        r = np.array(r)
        assert np.all((r > 0.2) & (r < 10)), (field, r)
        assert 0.5 < np.median(r) < 2.0, (field, r)


def test_sigmaa_fitting_set_pools_work_and_free_only_when_free_is_small():
    from dataclasses import dataclass

    from refinekit.plugin_api.numerics.reflections import sigmaa_fitting_set

    @dataclass
    class Lik:
        f_obs: np.ndarray
        eps: np.ndarray

    work, free = Lik(np.arange(5.0), np.ones(5)), Lik(np.arange(3.0) + 10, np.full(3, 2.0))
    calls, said = [], []

    def work_fc():
        calls.append(1)
        return np.full(5, 7.0)

    args = (free, work, np.full(3, 9.0), np.full(3, 2.0), work_fc, np.full(5, 3.0))
    lik, fc, d, used = sigmaa_fitting_set(*args, min_free=3, log=said.append)
    assert lik is free and used == "free" and not calls and not said
    lik, fc, d, used = sigmaa_fitting_set(*args, min_free=4, log=said.append)
    assert used == "all" and calls == [1] and "only 3 free reflections" in said[0]
    np.testing.assert_array_equal(lik.f_obs, [0, 1, 2, 3, 4, 10, 11, 12])
    np.testing.assert_array_equal(lik.eps, [1] * 5 + [2] * 3)
    np.testing.assert_array_equal(fc, [7] * 5 + [9] * 3)
    np.testing.assert_array_equal(d, [3] * 5 + [2] * 3)
