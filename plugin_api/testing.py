"""Conformance kit for plugin authors (use it from pytest).

    from refinekit.plugin_api import testing
    report = testing.check_term_gradient(term, model, fields=("xyz", "b_iso"))
    assert report.ok, report

Checks:

* :func:`check_term_gradient` — analytic gradient of a Term against central
  finite differences, per atomic field, on a random sample of components;
* :func:`check_parameterization` — ``apply(initial())`` reproduces the model
  and ``pullback`` equals finite differences of a random linear functional
  of the atoms through ``apply``;
* :func:`check_options` — defaults construct, unknown keys and wrong types
  are rejected with the key path in the message;
* :func:`check_component_class` — name, kind and docstring are present.

Relative error of a check = ‖g_fd − g_an‖₂ / ‖g_fd‖₂ over the sampled
components (the denominator floored at 1e-12).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .components import Component, Parameterization, Term
from .errors import ConfigError
from .gradient import FIELD_SHAPES, AtomGradient
from .model import AtomModel
from .options import parse_options

#: Central-difference steps per field (Å, Å², Å², fraction).
DEFAULT_STEPS = {"xyz": 1e-4, "b_iso": 1e-3, "u_aniso": 1e-5, "occ": 1e-5}


@dataclass
class GradientReport:
    """Per-field relative errors of a gradient check."""

    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-4
    details: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when every checked field is within tolerance."""
        return bool(self.errors) and all(e <= self.tolerance for e in self.errors.values())

    def __str__(self) -> str:
        parts = [f"{k}: {v:.2e}" for k, v in self.errors.items()]
        return f"gradient check (tol {self.tolerance:.0e}) " + ", ".join(parts)


def _field_array(model: AtomModel, name: str) -> np.ndarray:
    return getattr(model, name)


def _relative(fd: np.ndarray, an: np.ndarray) -> float:
    return float(np.linalg.norm(fd - an) / max(np.linalg.norm(fd), 1e-12))


def check_term_gradient(term: Term, model: AtomModel, fields=("xyz", "b_iso"),
                        n_samples: int = 24, steps: dict | None = None,
                        tolerance: float = 1e-4, seed: int = 0,
                        atoms: np.ndarray | None = None) -> GradientReport:
    """Compare ``term.evaluate`` gradients with central finite differences.

    ``atoms`` restricts the sampled atoms (default: all); for each field,
    ``n_samples`` random (atom, component) pairs are perturbed by ± step.
    The model is restored afterwards.
    """
    steps = {**DEFAULT_STEPS, **(steps or {})}
    rng = np.random.default_rng(seed)
    analytic = term.evaluate(model, want_grad=True).gradient
    if analytic is None:
        raise AssertionError(f"term {term.name!r} returned no gradient")
    report = GradientReport(tolerance=tolerance)
    pool = np.arange(model.n_atoms) if atoms is None else np.asarray(atoms)
    for name in fields:
        arr = _field_array(model, name)
        width = int(np.prod(FIELD_SHAPES[name])) if FIELD_SHAPES[name] else 1
        flat = arr.reshape(len(arr), width)
        picks = rng.choice(len(pool) * width, size=min(n_samples, len(pool) * width), replace=False)
        an_full = analytic.get(name).reshape(len(arr), width)
        fd, an = [], []
        h = steps[name]
        for p in picks:
            i, k = pool[p // width], p % width
            old = flat[i, k]
            flat[i, k] = old + h
            model.mark_changed()
            up = term.evaluate(model, want_grad=False).value
            flat[i, k] = old - h
            model.mark_changed()
            down = term.evaluate(model, want_grad=False).value
            flat[i, k] = old
            model.mark_changed()
            fd.append((up - down) / (2 * h))
            an.append(an_full[i, k])
        fd_arr, an_arr = np.array(fd), np.array(an)
        report.errors[name] = _relative(fd_arr, an_arr)
        report.details[name] = (fd_arr, an_arr)
    return report


def check_parameterization(param: Parameterization, model: AtomModel,
                           n_samples: int = 12, step: float = 1e-5,
                           tolerance: float = 1e-4, seed: int = 0) -> GradientReport:
    """Round-trip and pull-back consistency of a parameterization.

    Builds T(atoms) = Σ c·field for random c over ``param.fields``; checks
    ``apply(initial())`` leaves the model unchanged, then compares
    ``pullback(c)`` with finite differences of T(apply(p)) at p perturbed
    randomly away from the initial point (so non-linear maps are tested off
    their expansion point).
    """
    rng = np.random.default_rng(seed)
    before = {name: _field_array(model, name).copy() for name in param.fields}
    p0 = param.initial(model)
    param.apply(p0, model)
    report = GradientReport(tolerance=tolerance)
    report.errors["round_trip"] = max(
        float(np.max(np.abs(_field_array(model, n) - before[n]), initial=0.0)) for n in param.fields)
    coeff = {n: rng.normal(size=before[n].shape) for n in param.fields}

    def value() -> float:
        return float(sum(np.sum(coeff[n] * _field_array(model, n)) for n in param.fields))

    lower, upper = param.bounds(model)
    p_test = p0 + rng.normal(scale=0.01, size=p0.shape)
    p_test = np.clip(p_test, lower + 2 * step, upper - 2 * step)
    param.apply(p_test, model)
    grad = AtomGradient(model.n_atoms)
    for n in param.fields:
        setattr(grad, n, coeff[n].copy())
    an_full = param.pullback(grad, model)
    picks = rng.choice(len(p0), size=min(n_samples, len(p0)), replace=False)
    fd, an = [], []
    for k in picks:
        p = p_test.copy()
        p[k] += step
        param.apply(p, model)
        up = value()
        p[k] -= 2 * step
        param.apply(p, model)
        down = value()
        fd.append((up - down) / (2 * step))
        an.append(an_full[k])
    param.apply(p0, model)
    for n in param.fields:
        _field_array(model, n)[...] = before[n]
    model.mark_changed()
    report.errors["pullback"] = _relative(np.array(fd), np.array(an))
    report.tolerance = tolerance
    return report


def check_options(cls: type[Component]) -> None:
    """Raise AssertionError unless ``cls.Options`` validates as the contract requires.

    Defaults (plus ``cls.example_options`` for required keys) must construct;
    an unknown key and a wrong-typed value of each field must be refused
    with the key path in the message.
    """
    opts_cls = cls.Options
    assert dataclasses.is_dataclass(opts_cls), f"{cls.__name__}.Options must be a dataclass"
    base = dict(getattr(cls, "example_options", {}) or {})
    parse_options(opts_cls, base, "x")  # defaults (+ the example's required keys) construct
    try:
        parse_options(opts_cls, {**base, "no_such_key_xyz": 1}, "terms.x")
    except ConfigError as exc:
        assert "terms.x.no_such_key_xyz" in str(exc), str(exc)
    else:
        raise AssertionError(f"{cls.__name__}.Options accepted an unknown key")
    for f in dataclasses.fields(opts_cls):
        wrong = object()
        try:
            parse_options(opts_cls, {**base, f.name: wrong}, "terms.x")
        except ConfigError as exc:
            assert f"terms.x.{f.name}" in str(exc), str(exc)
        else:
            if f.type not in ("Any", "typing.Any"):
                raise AssertionError(f"{cls.__name__}.Options.{f.name} accepted {wrong!r}")


def check_component_class(cls: type[Component]) -> None:
    """Raise AssertionError unless ``cls`` has a name, a kind and a docstring."""
    assert cls.name, f"{cls.__name__} has no name"
    assert cls.kind, f"{cls.__name__} has no kind"
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"
