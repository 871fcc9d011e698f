"""Component kinds of the contract.

A plugin implements one or more of these classes and registers them from its
``refinekit_register(registry)`` hook.  Each class has

* ``name`` — the identifier used in TOML configs (e.g. ``"ls"``);
* ``Options`` — a dataclass of its settings (parsed with
  :func:`refinekit.plugin_api.options.parse_options`, unknown keys rejected);
* a docstring that cites the method it implements.

The kernel creates components with ``cls(options)`` and calls
``setup(context)`` before use; ``context`` follows :class:`Context`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

from .gradient import AtomGradient
from .model import AtomModel, MapData, ReflectionColumns, ReflectionData
from .numerics.fisher import atom_fisher_diagonal


@dataclass
class NoOptions:
    """A component with no settings."""


class Component(ABC):
    """Base of every component kind."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: a valid options table, for components whose Options have required keys
    #: (used by the conformance kit's ``check_options``)
    example_options: ClassVar[dict] = {}

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    def setup(self, context: "Context") -> None:
        """Bind to the run (data, model, other components); default does nothing."""


# --------------------------------------------------------------------------- terms
@dataclass
class TermResult:
    """Value of one term and, when asked, its derivatives with respect to atoms."""

    value: float
    gradient: AtomGradient | None = None
    curvature: AtomGradient | None = None


class Term(Component):
    """One additive piece T_i of the target T = Σ w_i·T_i.

    ``evaluate`` must be a pure function of the model's arrays (given the
    state fixed at ``setup``), so finite differences of ``value`` reproduce
    ``gradient``: the conformance kit checks exactly that.
    """

    kind: ClassVar[str] = "term"
    role: ClassVar[str] = "restraint"

    @abstractmethod
    def evaluate(self, model: AtomModel, want_grad: bool = True,
                 want_curv: bool = False) -> TermResult:
        """Value and optional gradient/diagonal curvature for ``model``."""

    def statistics(self, model: AtomModel) -> dict[str, float]:
        """Figures for the log and stats.json (e.g. r_work, rmsd_bonds)."""
        return {}


class DataTarget(Term):
    """A term measuring agreement with experimental data."""

    role: ClassVar[str] = "target"

    def map_coefficients(self, model: AtomModel) -> "ReflectionColumns | None":
        """Columns for the output MTZ, or None.

        Reciprocal-space targets return, for every reflection of the data:
        FWT/PHWT (2mFo−DFc), DELFWT/PHDELWT (mFo−DFc), FC/PHIC (F_calc),
        FOM (m) — phases in degrees.  The kernel writes them to
        ``refined.mtz``.
        """
        return None


class Restraint(Term):
    """A term encoding prior knowledge (geometry, similarity, reference)."""

    role: ClassVar[str] = "restraint"


@dataclass
class FTargetResult:
    """What a reciprocal-space target returns for model structure factors F.

    ``dT_dF[h] = ∂T/∂A_h + i·∂T/∂B_h`` for F_h = A_h + i·B_h, so for any atomic
    parameter x, ∂T/∂x = Σ_h Re(conj(dT_dF[h])·∂F_h/∂x).  ``curvature`` is an
    optional real diagonal approximation of ∂²T/∂A_h² (= ∂²T/∂B_h²).
    """

    value: float
    dT_dF: np.ndarray | None = None
    curvature: np.ndarray | None = None


class FTarget(DataTarget):
    """A reciprocal-space target that speaks in structure factors.

    Subclasses implement :meth:`target_f`; this base computes
    F_model = k_total·(F_calc + F_part) with the context's Fcalc engine and
    scales, and maps dT/dF back to atoms once through the engine's adjoint.
    (servalcat's likelihood classes follow the same split.)
    """

    def setup(self, context: "Context") -> None:
        self.engine = context.fcalc
        self.reflections = context.working_reflections()
        self.k_total, self.f_part = context.fmodel_scales(self.reflections)

    def fmodel(self, model: AtomModel) -> tuple[np.ndarray, np.ndarray]:
        """(F_calc, F_model) for the working reflections."""
        fc = self.engine.calc(model, self.reflections.hkl)
        return fc, self.k_total * (fc + self.f_part)

    @abstractmethod
    def target_f(self, f_model: np.ndarray, want_grad: bool,
                 want_curv: bool) -> FTargetResult:
        """T and dT/dF_model for model structure factors of the working set."""

    def evaluate(self, model: AtomModel, want_grad: bool = True,
                 want_curv: bool = False) -> TermResult:
        """T; dT/d(atoms) through the engine's adjoint; with ``want_curv`` and a
        per-reflection curvature from :meth:`target_f`, the atoms' diagonal
        curvature (:func:`~refinekit.plugin_api.numerics.fisher.atom_fisher_diagonal`)."""
        _, fm = self.fmodel(model)
        res = self.target_f(fm, want_grad, want_curv)
        curv = None
        if want_curv and res.curvature is not None:
            curv = atom_fisher_diagonal(model, self.engine.table, self.reflections.d,
                                        self.k_total ** 2 * res.curvature)
        if not want_grad:
            return TermResult(res.value, None, curv)
        # F_model = k (F_c + F_part) with real k:  dT/dF_c = k · dT/dF_model
        grad = self.engine.gradient(model, self.reflections.hkl, self.k_total * res.dT_dF)
        return TermResult(res.value, grad, curv)


# --------------------------------------------------------------------------- engines
class FcalcEngine(Component):
    """Atoms → structure factors F(hkl) and the adjoint for gradients.

    F_h = Σ_j occ_j f_j(s) exp(-B_j s²/4) Σ_sym exp(2πi h·(R x_j + t)),
    s = 1/d (Å⁻¹), summed over the space group's operations; ``calc``
    returns F for the given unique ``hkl`` (electrons: e·Å⁻³ units of the table).
    """

    kind: ClassVar[str] = "fcalc"
    table: "ScatteringTable | None" = None

    def setup(self, context: "Context") -> None:
        self.use_table(context.table)

    def use_table(self, table: "ScatteringTable") -> None:
        """Select the form factors (call again when the radiation changes)."""
        self.table = table

    @abstractmethod
    def calc(self, model: AtomModel, hkl: np.ndarray) -> np.ndarray:
        """Complex F for each Miller index (shape (M,))."""

    @abstractmethod
    def gradient(self, model: AtomModel, hkl: np.ndarray, dT_dF: np.ndarray) -> AtomGradient:
        """∂T/∂(xyz, b_iso, occ[, u_aniso]) given dT/dF (convention of FTargetResult)."""


@dataclass
class GaussianCoefficients:
    """Per-atom form factors f(s) = Σ_k a_k exp(-b_k s²/4) + c, s = 1/d in Å⁻¹.

    ``a`` (N, K) and ``c`` (N,) in the table's units (electrons for X-rays,
    Å for electron scattering, fm for neutrons); ``b`` (N, K) in Å².
    A constant c is a point scatterer (blurred only by the atom's own B).
    """

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray

    def evaluate(self, s2: np.ndarray) -> np.ndarray:
        """f for every atom (rows) at every s² (columns), s² in Å⁻²."""
        s2 = np.asarray(s2, dtype=np.float64)
        expo = np.exp(-self.b[:, :, None] * s2[None, None, :] / 4.0)
        return np.einsum("nk,nkm->nm", self.a, expo) + self.c[:, None]


class ScatteringTable(Component):
    """Form factors per element/charge for one radiation."""

    kind: ClassVar[str] = "table"
    radiation: ClassVar[str] = "xray"

    @abstractmethod
    def coefficients(self, element: Sequence[str], charge: Sequence[int]) -> GaussianCoefficients:
        """Gaussian coefficients for each atom; unknown elements raise InputError."""


# --------------------------------------------------------------------------- parameters
class Parameterization(Component):
    """Maps a reduced parameter vector p to atomic arrays, and gradients back.

    ``fields`` names the atomic arrays ``apply`` writes; two
    parameterizations writing the same field of the same atoms may not be
    refined in one minimisation.  Units are stated by each implementation.
    """

    kind: ClassVar[str] = "parameterization"
    fields: ClassVar[tuple[str, ...]] = ()
    #: indices of the atoms written, set by ``setup`` (None = all atoms)
    indices: np.ndarray | None = None

    @abstractmethod
    def initial(self, model: AtomModel) -> np.ndarray:
        """p such that ``apply(p)`` reproduces the current model."""

    @abstractmethod
    def apply(self, p: np.ndarray, model: AtomModel) -> None:
        """Write the atomic arrays for parameters ``p`` (in place)."""

    @abstractmethod
    def pullback(self, grad: AtomGradient, model: AtomModel) -> np.ndarray:
        """dT/dp from dT/d(atoms) at the current p (chain rule)."""

    def bounds(self, model: AtomModel) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) for each parameter; ±inf when unbounded."""
        n = len(self.initial(model))
        return np.full(n, -np.inf), np.full(n, np.inf)


# --------------------------------------------------------------------------- the rest
class Scaler(Component):
    """Fits nuisance parameters (scales, bulk solvent, σA) between minimisations."""

    kind: ClassVar[str] = "scaler"

    @abstractmethod
    def fit(self, context: "Context") -> dict[str, float]:
        """Refit; update the context's F_model scales; return figures to report."""


@dataclass
class OptimizerResult:
    """Outcome of one minimisation."""

    x: np.ndarray
    value: float
    n_evaluations: int
    message: str = ""


class Optimizer(Component):
    """Minimises f(x) given value and gradient."""

    kind: ClassVar[str] = "optimizer"

    @abstractmethod
    def minimize(self, fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
                 x0: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 max_iter: int) -> OptimizerResult:
        """Minimise ``fun`` (returns (value, gradient)) from x0 within bounds."""


class WeightScheme(Component):
    """Chooses the term weights w_i before a minimisation."""

    kind: ClassVar[str] = "weight"

    @abstractmethod
    def weights(self, context: "Context", terms: dict[str, Term],
                current: dict[str, float]) -> dict[str, float]:
        """New weights for ``terms`` (same keys as ``current``)."""


class Step(Component):
    """One action of a macro-cycle (minimise, scale, ...)."""

    kind: ClassVar[str] = "step"

    @abstractmethod
    def run(self, context: "Context") -> dict[str, Any]:
        """Do the step; return figures for the cycle statistics."""


class Reporter(Component):
    """Observes a run: progress, logs, plots, checkpoints."""

    kind: ClassVar[str] = "reporter"

    def start(self, context: "Context") -> None:
        """Called once before the first cycle."""

    def cycle_end(self, context: "Context", stats: dict[str, Any]) -> None:
        """Called after every macro-cycle with that cycle's statistics."""

    def finish(self, context: "Context", summary: dict[str, Any]) -> None:
        """Called once after the last cycle."""


class DataPreparer(Component):
    """Transforms experimental data once, before refinement (e.g. I → F).

    Run by the kernel after reading, in the order the config lists them
    (``[data] prepare = [...]``); the kernel adds ``french-wilson``-like
    preparers automatically only when a config names them.
    """

    kind: ClassVar[str] = "preparer"

    @abstractmethod
    def prepare(self, data: ReflectionData) -> tuple[ReflectionData, dict[str, Any]]:
        """Return the transformed data and figures to report."""


class ModelPreparer(Component):
    """Transforms the atomic model once, before refinement (e.g. adds hydrogens).

    Run by the kernel after reading the model, in the order the config lists
    them (``[model] prepare = [...]``).  May return a new model with a
    different number of atoms; nothing else has seen the model yet.
    """

    kind: ClassVar[str] = "model-preparer"

    @abstractmethod
    def prepare(self, model: AtomModel) -> tuple[AtomModel, dict[str, Any]]:
        """Return the transformed model and figures to report."""


class Reader(Component):
    """Reads one kind of object ('model', 'reflections' or 'map') from files."""

    kind: ClassVar[str] = "reader"
    produces: ClassVar[str] = "model"
    extensions: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def read(self, path: str, **hints: Any) -> Any:
        """Read ``path``; raise InputError naming the file and the problem.

        Reflection readers accept ``columns`` (a dict with optional keys
        f, sigf, i, sigi, free, free_convention — the [data] config) and
        choose sensible columns when a key is empty.
        """


class Writer(Component):
    """Writes one kind of object to files; writes must be atomic."""

    kind: ClassVar[str] = "writer"
    consumes: ClassVar[str] = "model"
    extensions: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def write(self, obj: Any, path: str) -> None:
        """Write ``obj`` to ``path`` (via a temporary file and rename)."""


# --------------------------------------------------------------------------- context
@runtime_checkable
class Context(Protocol):
    """What the kernel hands to components during a run.

    Attributes: ``model`` (AtomModel), ``data`` (ReflectionData, MapData or
    None), ``fcalc`` (FcalcEngine), ``table`` (ScatteringTable), ``cycle``
    (int, 0-based), ``options`` (dict of run-level settings).
    """

    model: AtomModel
    data: ReflectionData | MapData | None
    cycle: int

    @property
    def fcalc(self) -> FcalcEngine: ...

    @property
    def table(self) -> ScatteringTable: ...

    def working_reflections(self) -> ReflectionData:
        """Work-set reflections inside the current resolution range."""

    def fmodel_scales(self, reflections: ReflectionData) -> tuple[np.ndarray, np.ndarray]:
        """(k_total real (M,), F_part complex (M,)) for these reflections."""

    def set_fmodel_scales(self, k_total: np.ndarray, f_part: np.ndarray) -> None:
        """Replace the scales for *all* reflections of ``data``."""

    def free_reflections(self) -> ReflectionData:
        """Test-set reflections inside the current resolution range."""

    def scaler(self, name: str) -> "Scaler":
        """The configured scaler instance called ``name``."""

    def minimize(self, parameterizations: list[str], terms: list[str] | None,
                 max_iter: int) -> dict[str, Any]:
        """Minimise the weighted terms over the named parameterizations."""

    def log(self, message: str) -> None:
        """Write a line to the run log."""


__all__ = [
    "Component", "NoOptions", "Term", "TermResult", "DataTarget", "Restraint",
    "FTarget", "FTargetResult", "FcalcEngine", "GaussianCoefficients",
    "ScatteringTable", "Parameterization", "Scaler", "Optimizer",
    "OptimizerResult", "WeightScheme", "Step", "Reporter", "DataPreparer",
    "Reader", "Writer", "Context",
]
