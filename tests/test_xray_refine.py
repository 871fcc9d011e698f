"""The auto weight scheme (unit) and the `xray` preset on 1l2h (a short refinement)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import dataset
from refinekit.cli import _registry
from refinekit.plugin_api import AtomGradient, FcalcEngine, TermResult
from refinekit.plugins.auto_weight.scheme import AutoWeight, AutoWeightOptions
from refinekit.runner import refine


class _Term:
    """A stand-in term with fixed gradient/curvature and a settable bond rmsd."""

    def __init__(self, role: str, xyz: np.ndarray, rmsd: float | None = None):
        self.role, self.xyz, self.rmsd, self.angles = role, xyz, rmsd, 1.5

    def evaluate(self, model, want_grad=True, want_curv=False):
        return TermResult(0.0, AtomGradient(len(self.xyz), xyz=self.xyz) if want_grad else None,
                          AtomGradient(len(self.xyz), xyz=self.xyz) if want_curv else None)

    def statistics(self, model):
        return {} if self.rmsd is None else {"rmsd_bonds": self.rmsd, "rmsd_angles": self.angles}


class _Context:
    def __init__(self, n: int):
        self.model = SimpleNamespace(n_atoms=n)
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_auto_weight_initial_factor_adaptation_and_b_steps():
    """Gradient-ratio start, (r_mid/r)^(1/p) adaptation, reversal damping and limit,
    the angle criterion, ADP steps scaled."""
    rng = np.random.default_rng(0)
    n = 50
    data = _Term("target", rng.normal(size=(n, 3)))
    geom = _Term("restraint", np.full((n, 3), 800.0), rmsd=0.012)
    adp = _Term("restraint", np.zeros((n, 3)))
    ctx = _Context(n)
    scheme = AutoWeight(AutoWeightOptions(bond_rmsd_min=0.01, bond_rmsd_max=0.02, gradient_ratio=0.6,
                                          response=0.7, adp_scale=0.5, angle_rmsd_max=2.0))
    w = scheme.weights(ctx, {"ml": data, "geometry": geom}, {"ml": 2.0, "geometry": 1.0})
    expected = 0.6 * np.sqrt(2 * 800.0) / np.sqrt(np.mean((2.0 * data.xyz) ** 2))
    assert w == pytest.approx({"ml": 2.0 * expected, "geometry": 1.0})
    # B step: data weight × adp_scale·w, restraint untouched
    w_b = scheme.weights(ctx, {"ml": data, "adp": adp}, {"ml": 1.0, "adp": 1.0})
    assert w_b == pytest.approx({"ml": 0.5 * expected, "adp": 1.0})
    # in range (0.012 Å): kept
    assert scheme.weights(ctx, {"ml": data, "geometry": geom}, {"ml": 1.0, "geometry": 1.0})["ml"] \
        == pytest.approx(expected)
    # below the range: raised by (0.015/0.008)^(1/0.7)
    geom.rmsd = 0.008
    raised = scheme.weights(ctx, {"ml": data, "geometry": geom}, {"ml": 1.0, "geometry": 1.0})["ml"]
    assert raised == pytest.approx(expected * (0.015 / 0.008) ** (1 / 0.7))
    # bonds in range but angles 2.5° > 2.0°: lowered by (1.9/2.5)^(1/0.7), a reversal, so damped (√)
    geom.rmsd, geom.angles = 0.015, 2.5
    by_angles = scheme.weights(ctx, {"ml": data, "geometry": geom}, {"ml": 1.0, "geometry": 1.0})["ml"]
    assert by_angles == pytest.approx(raised * np.sqrt((1.9 / 2.5) ** (1 / 0.7)))
    # far above: lowered by at most max_change (3)
    geom.rmsd = 0.2
    lowered = scheme.weights(ctx, {"ml": data, "geometry": geom}, {"ml": 1.0, "geometry": 1.0})["ml"]
    assert lowered == pytest.approx(by_angles / 3.0)


def test_xray_preset_keeps_deposited_1l2h(tmp_path):
    """A macro-cycle from the deposited model keeps R-free and geometry in bounds.

    One cycle (R-free 0.2748 → 0.2720, statistics after the cycle's closing
    scale step); over 10 cycles R-free stays within 0.2720–0.2736, R-work
    0.2521 → 0.2477.
    """
    registry = _registry({})
    summary = refine(registry, {}, dataset("1l2h", "1l2h.cif"), dataset("1l2h", "1l2h.mtz"),
                     str(tmp_path / "out"), preset="xray", cycles=1, echo=False)
    start, final = summary["cycles"][0], summary["final"]
    assert final["r_free"] <= start["r_free"] + 0.005, (start["r_free"], final["r_free"])
    assert final["r_work"] < 0.26
    assert final["rmsd_bonds"] <= 0.02
    assert final["rmsd_angles"] <= 2.0
    assert 3.0 < summary["cycles"][1]["weights"]["ml"] < 30.0  # the gradient-ratio estimate
    # 5 joint iterations: start + 5 steps + at most one backtrack (8 before the Newton-length start)
    assert summary["cycles"][1]["xyz+b-iso_n_evaluations"] <= 7


def _protein_positions(path) -> dict:
    """{(chain, residue number, atom name): xyz} of the non-H, non-water atoms of a model file."""
    import gemmi

    st = gemmi.read_structure(str(path))
    return {(ch.name, r.seqid.num, a.name): np.array(a.pos.tolist()) for ch in st[0] for r in ch
            for a in r if not a.is_hydrogen() and r.name != "HOH"}


@pytest.mark.slow
@pytest.mark.parametrize("start, max_rmsd", [("1l2h_p03.cif", 0.15), ("1l2h_p05.cif", 0.25)])
def test_xray_preset_converges_from_perturbed_1l2h(tmp_path, start, max_rmsd):
    """10 cycles from 0.3 / 0.5 Å rms shifts with B = 30 Å²: back within max_rmsd of the deposited
    model (non-H, non-water atoms) and R-free within 0.015 of the deposited model's run (0.2736).
    Measured: p03 0.115 Å, R-free 0.2785; p05 0.181 Å, 0.2727 (servalcat from p05: 0.295 Å, 0.2832)."""
    registry = _registry({})
    summary = refine(registry, {}, dataset("1l2h", start), dataset("1l2h", "1l2h.mtz"),
                     str(tmp_path / "out"), preset="xray", cycles=10, echo=False)
    ref = _protein_positions(dataset("1l2h", "1l2h.cif"))
    out = _protein_positions(tmp_path / "out" / "refined.cif")
    keys = [k for k in ref if k in out]
    assert len(keys) > 0.95 * len(ref)
    rmsd = float(np.sqrt(np.mean([np.sum((ref[k] - out[k]) ** 2) for k in keys])))
    assert rmsd < max_rmsd, rmsd
    assert summary["final"]["r_free"] < 0.2736 + 0.015, summary["final"]["r_free"]


class _CountingEngine(FcalcEngine):
    """F = Σ occ·exp(2πi h·x_frac) (a point-atom sum) that counts its calls."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def calc(self, model, hkl):
        self.calls += 1
        frac = model.xyz @ np.array(model.cell.frac.mat.tolist()).T
        return np.exp(2j * np.pi * np.asarray(hkl) @ frac.T) @ model.occ

    def gradient(self, model, hkl, dT_dF):
        return AtomGradient(model.n_atoms)


def test_fcalc_memo_reuses_values_only_for_equal_atoms_and_indices():
    """The kernel's F_calc reuse: same atoms and indices → one engine call and equal values;
    atoms changed (even without mark_changed) or other indices → a fresh calculation."""
    import gemmi

    from refinekit.engine import FcalcMemo
    from refinekit.plugin_api import AtomModel

    st = gemmi.read_structure(str(dataset("1l2h", "1l2h.cif")))
    st.setup_entities()
    model = AtomModel.from_structure(st)
    engine = _CountingEngine()
    memo = FcalcMemo(engine)
    hkl = np.array([[1, 2, 3], [0, 0, 4], [5, 1, 0]])
    first = memo.calc(model, hkl)
    first[:] = 0  # callers get copies
    again = memo.calc(model, hkl.copy())
    assert engine.calls == 1 and np.allclose(again, engine.calc(model, hkl))
    engine.calls = 1
    model.xyz[0, 0] += 0.01  # no mark_changed: compared by value
    moved = memo.calc(model, hkl)
    assert engine.calls == 2 and not np.allclose(moved, again)
    memo.calc(model, hkl[:2])
    assert engine.calls == 3
    memo.calc(model, hkl)  # still stored (3 entries kept)
    assert engine.calls == 3 and memo.hits == 2


class _LinearParams:
    """p → field[atoms] = factor·p (a linear parameterization of one atomic field)."""

    def __init__(self, field: str, factor: float):
        self.field, self.factor = field, factor

    def apply(self, p, model):
        target = getattr(model, self.field)
        target[...] = self.factor * np.asarray(p).reshape(target.shape)


class _CurvTerm:
    def __init__(self, curvature):
        self.curvature = curvature

    def evaluate(self, model, want_grad=True, want_curv=False):
        return TermResult(0.0, None, self.curvature if want_curv else None)


def test_joint_minimisation_block_scales_are_root_mean_curvatures():
    """Run._block_scales: √(Σ w·C·(∂atoms/∂p)² averaged over the block) per block — exact for
    linear maps (xyz identity, B = 2p), weights applied; None when a term has no curvature."""
    from refinekit.engine import Run

    rng = np.random.default_rng(0)
    n = 30
    model = SimpleNamespace(n_atoms=n, xyz=rng.normal(size=(n, 3)), b_iso=rng.uniform(10, 40, n),
                            mark_changed=lambda: None)
    c1 = AtomGradient(n, xyz=rng.uniform(100, 900, (n, 3)))
    c2 = AtomGradient(n, xyz=rng.uniform(1, 5, (n, 3)), b_iso=rng.uniform(0.1, 0.5, n))
    run = SimpleNamespace(model=model)
    params = [_LinearParams("xyz", 1.0), _LinearParams("b_iso", 2.0)]
    x0 = [model.xyz.ravel().copy(), model.b_iso / 2.0]
    terms = {"geometry": _CurvTerm(c1), "ml": _CurvTerm(c2)}
    scale = Run._block_scales(run, params, terms, {"geometry": 1.0, "ml": 3.0}, x0)
    assert scale[:3 * n] == pytest.approx(np.sqrt(np.mean(c1.xyz + 3.0 * c2.xyz)))
    assert scale[3 * n:] == pytest.approx(np.sqrt(4.0 * np.mean(3.0 * c2.b_iso)))
    np.testing.assert_array_equal(model.b_iso, 2.0 * x0[1])  # the model is left as it was
    terms["adp"] = _CurvTerm(None)
    assert Run._block_scales(run, params, terms, {"geometry": 1.0, "ml": 3.0, "adp": 1.0}, x0) is None


def test_newton_length_is_a_power_of_two_near_a_quarter_of_the_gradient_norm():
    """The joint step's coordinates are divided by it: a unit first step is ≈¼ of −g, and
    x·s/s stays exact (a power of two), so the start is not evaluated twice."""
    from refinekit.engine import _newton_length

    rng = np.random.default_rng(1)
    for norm in (3e-3, 0.7, 213.0, 5.4e4):
        g = rng.normal(size=500)
        g *= norm / np.linalg.norm(g)
        length = _newton_length(g)
        assert np.log2(length) == round(np.log2(length))
        assert 0.25 / np.sqrt(2) <= length / norm <= 0.25 * np.sqrt(2)
        x, s = rng.normal(size=500), rng.uniform(0.1, 10, 500)
        np.testing.assert_array_equal(x * (s / length) / (s / length), x * s / s)
    assert _newton_length(np.zeros(3)) == 1.0
