"""Conformance kit on the first-party parameterizations (xyz, b-iso, rigid-body)."""

from __future__ import annotations

import types

import gemmi
import numpy as np
import pytest

from conftest import dataset
from refinekit.plugin_api import AtomGradient, AtomModel, ConfigError
from refinekit.plugin_api.testing import check_parameterization
from refinekit.plugins.b_iso.param import BIsoOptions, BIsoParameters
from refinekit.plugins.geometry.hydrogens import HydrogenOptions, Hydrogens
from refinekit.plugins.rigid_body.param import RigidBody, RigidBodyOptions, rotation
from refinekit.plugins.xyz.param import XyzOptions, XyzParameters


def models():
    small = AtomModel.from_structure(gemmi.read_structure(str(dataset("5e5z", "5e5z.pdb"))))
    st = gemmi.read_structure(str(dataset("1l2h", "1l2h.cif")))
    frag = AtomModel.from_structure(st)
    return {"5e5z": small, "1l2h": frag, "1l2h+H": with_hydrogens(frag)}


def with_hydrogens(model: AtomModel) -> AtomModel:
    preparer = Hydrogens(HydrogenOptions(monlib=str(dataset("..", "monlib"))))
    out, _ = preparer.prepare(model)
    return out


@pytest.fixture(scope="module", params=["5e5z", "1l2h", "1l2h+H"])
def model(request):
    return models()[request.param]


def ctx(model):
    return types.SimpleNamespace(model=model)


@pytest.mark.parametrize("make", [
    lambda: XyzParameters(XyzOptions()),
    lambda: XyzParameters(XyzOptions(selection="/1/A/2-5")),
    lambda: BIsoParameters(BIsoOptions()),
    lambda: RigidBody(RigidBodyOptions()),
    lambda: RigidBody(RigidBodyOptions(groups=["/1/A/1-3", "/1/A/4-6"])),
])
def test_conformance(model, make):
    param = make()
    if isinstance(param, RigidBody) and param.options.groups and model.n_atoms > 1000:
        param.options.groups = ["/1/A/4-100", "/1/A/101-200"]
    param.setup(ctx(model))
    report = check_parameterization(param, model)
    assert report.errors["round_trip"] < 1e-9, report
    assert report.errors["pullback"] <= 1e-4, report


def test_rotation_derivatives_by_finite_differences():
    angles = np.array([0.3, -0.2, 0.5])
    _, derivs = rotation(angles)
    for k in range(3):
        step = np.zeros(3)
        step[k] = 1e-6
        fd = (rotation(angles + step)[0] - rotation(angles - step)[0]) / 2e-6
        assert np.allclose(fd, derivs[k], atol=1e-8)
    r, _ = rotation(angles)
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)


def test_rigid_body_moves_group_rigidly():
    model = models()["5e5z"]
    param = RigidBody(RigidBodyOptions())
    param.setup(ctx(model))
    before = model.xyz.copy()
    p = np.array([0.05, -0.03, 0.02, 0.4, -0.2, 0.1] * len(param.groups))
    param.apply(p, model)
    d_before = np.linalg.norm(before[:, None] - before[None], axis=-1)
    d_after = np.linalg.norm(model.xyz[:, None] - model.xyz[None], axis=-1)
    assert np.allclose(d_before, d_after, atol=1e-10)
    assert not np.allclose(before, model.xyz)


def test_b_iso_bounds_and_isotropize():
    model = models()["5e5z"]
    model.has_aniso[:3] = True
    model.u_aniso[:3] = [0.2, 0.3, 0.4, 0, 0, 0]
    param = BIsoParameters(BIsoOptions(b_min=2.0, b_max=80.0))
    param.setup(ctx(model))
    assert not model.has_aniso[:3].any()
    assert np.allclose(model.b_iso[:3], 8 * np.pi ** 2 * 0.3)
    lo, hi = param.bounds(model)
    assert np.all(lo == 2.0) and np.all(hi == 80.0)
    with pytest.raises(ValueError):
        BIsoOptions(b_min=5, b_max=1).validate()


def test_pullback_of_selection_ignores_other_atoms():
    model = models()["5e5z"]
    param = XyzParameters(XyzOptions(selection="/1/A/2"))
    param.setup(ctx(model))
    grad = AtomGradient.zeros(model.n_atoms, ("xyz",))
    grad.xyz[:] = 1.0
    assert len(param.pullback(grad, model)) == 3 * len(param.indices) < 3 * model.n_atoms


def test_empty_rigid_group_is_an_error():
    model = models()["5e5z"]
    param = RigidBody(RigidBodyOptions(groups=["/1/Z"]))
    with pytest.raises(ConfigError, match="selects no atoms"):
        param.setup(ctx(model))


def polar_context(model):
    """A context whose data are reflections, so the floating-origin fix is active (P2₁, P4₃)."""
    from refinekit.plugin_api import ReflectionData

    data = ReflectionData(np.array([[1, 0, 0]]), model.cell, model.spacegroup)
    return types.SimpleNamespace(model=model, data=data)


@pytest.mark.parametrize("make", [lambda: XyzParameters(XyzOptions()),
                                  lambda: RigidBody(RigidBodyOptions())])
def test_polar_origin_is_held_and_pullback_stays_exact(model, make):
    from refinekit.plugin_api.numerics.origin import floating_directions

    axis = floating_directions(model.cell, model.spacegroup)
    assert len(axis) == 1  # P2₁ (b) and P4₃ (c)
    param = make()
    param.setup(polar_context(model))
    before = model.xyz.mean(axis=0) @ axis[0]
    p = param.initial(model)
    if isinstance(param, XyzParameters):
        p = (p.reshape(-1, 3) + 0.7 * axis[0]).ravel()  # a pure drift along the polar axis
    else:
        p[3:6] += 0.7 * axis[0]
        p[0] += 0.02
    param.apply(p, model)
    assert abs(model.xyz.mean(axis=0) @ axis[0] - before) < 1e-9
    report = check_parameterization(param, model)
    assert report.errors["pullback"] <= 1e-4, report
    param.apply(param.initial(model), model)


def test_origin_not_fixed_for_subsets_or_maps(model):
    param = XyzParameters(XyzOptions(selection="/1/A/4"))
    param.setup(polar_context(model))
    assert len(param.directions) == 0
    param = XyzParameters(XyzOptions())
    param.setup(ctx(model))  # no reflection data (e.g. a map): the origin is absolute
    assert len(param.directions) == 0


def test_riding_hydrogen_b_follows_parent():
    model = models()["1l2h+H"]
    h = model.is_hydrogen
    assert h.sum() > 1000 and np.all(model.b_iso[h] > 0)
    param = BIsoParameters(BIsoOptions())
    param.setup(ctx(model))
    assert len(param.initial(model)) == int((~h).sum())  # one B per heavy atom
    assert set(param.riders) == set(np.flatnonzero(h))  # every H found its parent
    p = param.initial(model) + 5.0
    param.apply(p, model)
    parent_of = dict(zip(param.riders, param.free[param.slot]))
    for k in param.riders[:50]:
        assert model.b_iso[k] == pytest.approx(model.b_iso[parent_of[k]])  # ratio 1 from the preparer
    # pull-back: a unit gradient on one H lands on its parent
    g = AtomGradient(model.n_atoms, b_iso=np.zeros(model.n_atoms))
    g.b_iso[param.riders[0]] = 1.0
    back = param.pullback(g, model)
    assert back[param.slot[0]] == pytest.approx(1.0) and np.count_nonzero(back) == 1
    off = BIsoParameters(BIsoOptions(riding_hydrogens=False))
    off.setup(ctx(model))
    assert len(off.initial(model)) == model.n_atoms
