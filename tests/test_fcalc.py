"""Structure-factor engines ``fft`` and ``direct``: accuracy against each other and
gemmi, exact gradients (finite differences), symmetry incl. centring, ANISOU."""

from __future__ import annotations

import subprocess
import sys

import gemmi
import numpy as np
import pytest
from conftest import dataset

from refinekit.plugin_api import AtomModel, ConfigError, InputError, Term, TermResult
from refinekit.plugin_api.testing import check_component_class, check_options, check_term_gradient
from refinekit.plugins.fcalc_direct.engine import DirectFcalc
from refinekit.plugins.fcalc_fft.engine import FftFcalc, FftOptions
from refinekit.plugins.xray_tables.table import XrayTable

SHELL_TOL = 0.005  # Σ|Fa−Fb|/Σ|Fb| per resolution shell


# --------------------------------------------------------------------------- helpers
def engine(cls, **options):
    eng = cls(FftOptions(**options)) if options else cls()
    eng.use_table(XrayTable())
    return eng


def load(*parts) -> AtomModel:
    path = dataset(*parts)
    return AtomModel.from_structure(gemmi.read_structure(str(path)), str(path))


def mtz_hkl(*parts) -> np.ndarray:
    return np.array(gemmi.read_mtz_file(str(dataset(*parts))).make_miller_array())


def shell_errors(model: AtomModel, hkl: np.ndarray, fa: np.ndarray, fb: np.ndarray,
                 n_shells: int = 10) -> np.ndarray:
    """Σ|Fa−Fb|/Σ|Fb| in shells of equal reflection count."""
    d = model.cell.calculate_d_array(hkl) if hasattr(model.cell, "calculate_d_array") else \
        np.array([model.cell.calculate_d(list(h)) for h in hkl.tolist()])
    shells = np.array_split(np.argsort(d), n_shells)
    return np.array([np.abs(fa[s] - fb[s]).sum() / np.abs(fb[s]).sum() for s in shells])


def gemmi_sf(model: AtomModel, hkl: np.ndarray) -> np.ndarray:
    """gemmi's exact IT92 structure factors (no f', f'') of the model's current arrays."""
    st = model.to_structure()
    st.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    return np.array([calc.calculate_sf_from_model(st[0], h) for h in hkl.tolist()])


class Probe(Term):
    """T = 1e-3 Σ_h (w_h |F_h|² + Re(conj(C_h) F_h)) with random w ≥ 0 and complex C."""

    name = "fcalc-probe"

    def __init__(self, eng, hkl, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.eng, self.hkl = eng, hkl
        self.w = rng.random(len(hkl))
        self.c = rng.normal(size=len(hkl)) + 1j * rng.normal(size=len(hkl))

    def evaluate(self, model, want_grad=True, want_curv=False):
        f = self.eng.calc(model, self.hkl)
        value = 1e-3 * float(np.sum(self.w * np.abs(f) ** 2) + np.sum((np.conj(self.c) * f).real))
        if not want_grad:
            return TermResult(value)
        return TermResult(value, self.eng.gradient(model, self.hkl, 1e-3 * (2 * self.w * f + self.c)))


def make_some_aniso(model: AtomModel, atoms: np.ndarray, seed: int = 1) -> None:
    """Give ``atoms`` random positive-definite U (Å²) and make all others isotropic."""
    rng = np.random.default_rng(seed)
    model.has_aniso[:] = False
    for i in atoms:
        a = rng.normal(size=(3, 3)) * 0.08
        u = a @ a.T + np.eye(3) * 0.08
        model.u_aniso[i] = [u[0, 0], u[1, 1], u[2, 2], u[0, 1], u[0, 2], u[1, 2]]
        model.has_aniso[i] = True
    model.mark_changed()


def gradient_checks(eng, model, hkl, aniso_atoms, n_samples=16):
    iso_atoms = np.setdiff1d(np.arange(model.n_atoms), aniso_atoms)
    term = Probe(eng, hkl)
    iso = check_term_gradient(term, model, fields=("xyz", "b_iso", "occ"), atoms=iso_atoms,
                              n_samples=n_samples)
    an = check_term_gradient(term, model, fields=("xyz", "u_aniso", "occ"), atoms=aniso_atoms,
                             n_samples=n_samples)
    return iso, an


# --------------------------------------------------------------------------- contract
@pytest.mark.parametrize("cls", [FftFcalc, DirectFcalc])
def test_component_contract(cls):
    check_component_class(cls)
    check_options(cls)
    assert cls.kind == "fcalc"


def test_bad_options_and_inputs():
    from refinekit.plugin_api import parse_options
    with pytest.raises(ConfigError, match="rate"):
        parse_options(FftOptions, {"rate": 0.5}, "fcalc")
    with pytest.raises(ConfigError, match="cutoff"):
        parse_options(FftOptions, {"cutoff": -1.0}, "fcalc")
    model = load("5e5z", "5e5z.pdb")
    with pytest.raises(InputError, match="scattering table"):
        FftFcalc().calc(model, np.zeros((2, 3), dtype=int))
    eng = engine(FftFcalc)
    with pytest.raises(InputError, match="shape"):
        eng.calc(model, np.zeros((4,), dtype=int))
    with pytest.raises(InputError, match="dT_dF"):
        eng.gradient(model, np.ones((3, 3), dtype=int), np.ones(2, dtype=complex))


def test_entry_points_do_not_import_numba():
    code = ("import sys, refinekit.plugins.fcalc_fft, refinekit.plugins.fcalc_direct; "
            "sys.exit(1 if 'numba' in sys.modules or 'pyfftw' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- accuracy
@pytest.fixture(scope="module")
def l2h():
    model = load("1l2h", "1l2h.cif")
    hkl = mtz_hkl("1l2h", "1l2h.mtz")
    return model, hkl


def test_1l2h_fft_direct_and_gemmi_agree_in_every_shell(l2h):
    model, hkl = l2h
    f_fft = engine(FftFcalc).calc(model, hkl)
    f_dir = engine(DirectFcalc).calc(model, hkl)
    err = shell_errors(model, hkl, f_fft, f_dir)
    assert err.max() <= SHELL_TOL, err
    assert err.max() < 1.5e-3, err  # measured ≈ 7e-4 with the defaults (cutoff 1e-4)
    sub = np.arange(0, len(hkl), 20)  # gemmi's Python-level loop: every 20th reflection
    f_gem = gemmi_sf(model, hkl[sub])
    err_dir = shell_errors(model, hkl[sub], f_dir[sub], f_gem)
    err_fft = shell_errors(model, hkl[sub], f_fft[sub], f_gem)
    assert err_dir.max() < 1e-6, err_dir  # same formula: agreement to rounding
    assert err_fft.max() <= SHELL_TOL, err_fft
    print(f"1l2h worst-shell Σ|ΔF|/Σ|F|: fft vs direct {err.max():.2e}, "
          f"fft vs gemmi {err_fft.max():.2e}, direct vs gemmi {err_dir.max():.2e}")


def test_fft_is_stable_under_calls_and_caches(l2h):
    model, hkl = l2h
    eng = engine(FftFcalc)
    a = eng.calc(model, hkl)
    geo = eng._geometry
    b = eng.calc(model, hkl)
    assert eng._geometry is geo  # geometry reused for the same hkl/cell/space group
    np.testing.assert_array_equal(a, b)
    sub = hkl[::3]
    c = eng.calc(model, sub)  # another reflection set: rebuilt, same values
    np.testing.assert_allclose(c, a[::3], rtol=0, atol=1e-6 * np.abs(a).max())


def test_aniso_3nr7_fft_matches_direct_and_gemmi():
    model = load("3nr7_lowres_tls", "3nr7.pdb")
    assert model.has_aniso.all()
    hkl = mtz_hkl("3nr7_lowres_tls", "3nr7.mtz")
    f_fft = engine(FftFcalc).calc(model, hkl)
    f_dir = engine(DirectFcalc).calc(model, hkl)
    err = shell_errors(model, hkl, f_fft, f_dir)
    assert err.max() <= SHELL_TOL, err
    sub = np.arange(0, len(hkl), 10)
    f_gem = gemmi_sf(model, hkl[sub])
    assert shell_errors(model, hkl[sub], f_dir[sub], f_gem, 5).max() < 1e-6


def centred_model() -> AtomModel:
    """Six atoms in C 1 2 1 (one on the 2-fold, one anisotropic, one part-occupied)."""
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(22.0, 14.0, 17.0, 90, 103, 90)
    st.spacegroup_hm = "C 1 2 1"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    res = gemmi.Residue()
    res.name, res.seqid = "LIG", gemmi.SeqId(1, " ")
    sites = [("C1", "C", (3.1, 2.2, 4.0), 12.0), ("N1", "N", (4.3, 2.9, 4.4), 15.0),
             ("O1", "O", (5.0, 3.8, 3.6), 20.0), ("S1", "S", (2.4, 1.0, 5.6), 18.0),
             ("C2", "C", (0.0, 5.0, 0.0), 25.0), ("O2", "O", (6.1, 4.4, 7.9), 10.0)]
    for name, el, pos, b in sites:
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos, atom.b_iso, atom.occ = name, gemmi.Element(el), gemmi.Position(*pos), b, 1.0
        res.add_atom(atom)
    chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    m = AtomModel.from_structure(st)
    m.occ[2] = 0.6
    m.u_aniso[5] = [0.15, 0.10, 0.12, 0.02, -0.01, 0.03]
    m.has_aniso[5] = True
    return m


def test_centred_c2_fft_direct_gemmi_and_gradients():
    model = centred_model()
    assert len(model.spacegroup.operations()) == 4
    hkl = np.array(gemmi.make_miller_array(model.cell, model.spacegroup, 1.4))
    fft_eng, dir_eng = engine(FftFcalc), engine(DirectFcalc)
    f_fft, f_dir = fft_eng.calc(model, hkl), dir_eng.calc(model, hkl)
    f_gem = gemmi_sf(model, hkl)
    assert shell_errors(model, hkl, f_dir, f_gem, 5).max() < 1e-6
    assert shell_errors(model, hkl, f_fft, f_dir, 5).max() <= SHELL_TOL
    # centring: C-absent reflections (h+k odd) vanish
    absent = (hkl[:, 0] + hkl[:, 1]) % 2 == 1
    assert not absent.any() or np.abs(f_dir[absent]).max() < 1e-9
    for eng in (fft_eng, dir_eng):
        iso, an = gradient_checks(eng, model, hkl, np.array([5]), n_samples=8)
        assert iso.ok and an.ok, (eng.name, iso, an)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cls", [FftFcalc, DirectFcalc])
def test_gradients_5e5z_p21(cls):
    model = load("5e5z", "5e5z.pdb")
    hkl = mtz_hkl("5e5z", "5e5z.mtz")
    make_some_aniso(model, np.arange(0, model.n_atoms, 5))
    model.occ[1::7] = 0.65
    iso, an = gradient_checks(engine(cls), model, hkl, np.arange(0, model.n_atoms, 5))
    assert iso.ok, iso
    assert an.ok, an


@pytest.mark.parametrize("cls", [FftFcalc, DirectFcalc])
def test_gradients_1l2h_fragment_p43(cls, l2h):
    full, hkl = l2h
    st = full.structure.clone()
    keep = 0
    for chain in st[0]:
        for i in range(len(chain) - 1, -1, -1):
            if keep >= 60 or chain[i].seqid.num > 12:
                del chain[i]
            else:
                keep += len(chain[i])
    st.remove_empty_chains()
    model = AtomModel.from_structure(st)
    d = model.cell.calculate_d_array(hkl) if hasattr(model.cell, "calculate_d_array") else \
        np.array([model.cell.calculate_d(list(h)) for h in hkl.tolist()])
    sub = hkl[d > 2.5]
    make_some_aniso(model, np.arange(0, model.n_atoms, 6), seed=3)
    iso, an = gradient_checks(engine(cls), model, sub, np.arange(0, model.n_atoms, 6), n_samples=10)
    assert iso.ok, iso
    assert an.ok, an


def test_fft_gradient_matches_direct_gradient():
    """The adjoint FFT gradient is close to the exact one (same target, both engines)."""
    model = centred_model()
    hkl = np.array(gemmi.make_miller_array(model.cell, model.spacegroup, 1.4))
    g_fft = Probe(engine(FftFcalc), hkl).evaluate(model).gradient
    g_dir = Probe(engine(DirectFcalc), hkl).evaluate(model).gradient
    for name in ("xyz", "b_iso", "occ", "u_aniso"):
        a, b = g_fft.get(name), g_dir.get(name)
        assert np.linalg.norm(a - b) <= 5e-3 * np.linalg.norm(b), name


# --------------------------------------------------------------------------- kernels and FFT plans
def test_separable_and_general_density_kernels_agree(l2h):
    """Atoms with diagonal index-space forms use 1-D tables; the general per-term recurrence
    (forced here by a negligible off-diagonal element) must give the same grid and moments."""
    from refinekit.plugin_api.numerics import density
    model, hkl = l2h
    eng = engine(FftFcalc, threads=1)
    eng.calc(model, hkl)
    geo = eng._geometry
    t = eng._terms(model, geo)
    sub = np.arange(0, model.n_atoms, 7)
    occ = model.occ[sub].astype(np.float64)
    general = t.pq[sub].copy()
    general[..., 3] = 1e-300  # P01 ≠ 0 takes the general path, without changing any value
    order, slabs = np.arange(len(sub)), np.array([0, 0, len(sub)])
    grids = []
    for pq in (t.pq[sub], general):
        assert density._is_diagonal(t.amp[sub[0]], pq[0]) == (pq is not general)
        g = np.zeros(geo.shape)
        density.spread(g, t.centres[sub], occ, t.amp[sub], t.logr[sub], t.shift[sub], pq, t.half[sub],
                       order, slabs)
        grids.append(g)
    np.testing.assert_allclose(grids[0], grids[1], rtol=0, atol=1e-12 * np.abs(grids[1]).max())
    d = np.random.default_rng(0).normal(size=geo.shape)
    moments = [density.gather(d, t.centres[sub], occ, t.amp[sub], t.logr[sub], t.shift[sub], pq,
                              t.wq[sub], t.half[sub], geo.m) for pq in (t.pq[sub], general)]
    for a, b in zip(*moments):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11 * np.abs(b).max())


def test_slab_plan_balances_work_and_spreads_what_one_thread_spreads(l2h):
    """plan_slabs: the parallel spread equals the serial one (no two threads write one plane),
    and the planned split of the estimated work (atom_work, as the threads receive the slabs)
    beats one thread clearly; atoms' work grows with their reach."""
    from refinekit.plugin_api.numerics import density
    model, hkl = l2h
    eng = engine(FftFcalc, threads=2)
    eng.calc(model, hkl)
    geo = eng._geometry
    t = eng._terms(model, geo)
    occ = model.occ.astype(np.float64)
    plan = density.plan_slabs(t.centres, t.half, geo.shape, 2)
    assert plan is not None
    work = density.atom_work(t.half)
    order, starts = density.slab_groups(plan, t.centres, t.half, geo.shape)
    group = np.empty(model.n_atoms, dtype=np.int64)
    for g in range(len(starts) - 1):
        group[order[starts[g]:starts[g + 1]]] = g
    assert density._makespan(group, work, plan.n_slabs, 2) < 0.75 * work.sum()
    assert np.corrcoef(work, t.half.max(axis=(1, 2)))[0, 1] > 0.5
    grids = []
    for o, s in ((order, starts), density.slab_groups(None, t.centres, t.half, geo.shape)):
        g = np.zeros(geo.shape)
        with density.numba_threads(2):
            density.spread(g, t.centres, occ, t.amp, t.logr, t.shift, t.pq, t.half, o, s)
        grids.append(g)
    np.testing.assert_allclose(grids[0], grids[1], rtol=0, atol=1e-12 * np.abs(grids[1]).max())


def test_terms_are_reused_only_for_the_same_atoms(l2h):
    """The gradient reuses the Gaussian terms of the F_calc just computed, and a changed atom
    (or another table) recomputes them."""
    model, hkl = l2h
    eng = engine(FftFcalc)
    eng.calc(model, hkl)
    geo = eng._geometry
    first = eng._terms(model, geo)
    assert eng._terms(model, geo) is first
    moved = model.copy()
    moved.b_iso[3] += 1.0
    second = eng._terms(moved, geo)
    assert second is not first and second.amp[3, 0] != first.amp[3, 0]
    assert eng._terms(moved, geo) is second
    eng.use_table(XrayTable())  # another table object: its coefficients may differ
    assert eng._terms(moved, geo) is not second


def test_fftw_wisdom_file_round_trip(tmp_path, monkeypatch):
    """Wisdom is written atomically under $XDG_CACHE_HOME/refinekit and a damaged file is ignored."""
    import json

    import pyfftw

    from refinekit.plugin_api.numerics import fft
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = fft.wisdom_path()
    assert path.parent == tmp_path / "refinekit"
    fft._save_wisdom()
    parts = json.loads(path.read_text())
    assert [p.encode() for p in parts] == list(pyfftw.export_wisdom())
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    path.write_text("{not json")
    monkeypatch.setitem(fft._WISDOM_STATE, "loaded", False)
    fft._load_wisdom()  # must not raise
    plan = fft.RealFFT((8, 6, 10), threads=1)  # small grid: FFTW_ESTIMATE, no measuring
    plan.real_in[...] = np.random.default_rng(1).normal(size=(8, 6, 10))
    np.testing.assert_allclose(plan.forward(), np.fft.rfftn(plan.real_in), atol=1e-12)
