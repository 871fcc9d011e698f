"""The refinement engine: composes weighted terms, pulls gradients back
through parameterizations, runs optimizers and macro-cycles of steps.

It knows no physics: every term, parameterization, scaler, step and reporter
is a component created through the registry from the validated config.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from refinekit.plugin_api.components import (
    DataTarget, FcalcEngine, Optimizer, Parameterization, Reporter, Scaler, ScatteringTable, Step,
    Term, WeightScheme,
)
from refinekit.plugin_api.errors import ConfigError
from refinekit.plugin_api.gradient import AtomGradient
from refinekit.plugin_api.model import AtomModel, MapData, ReflectionData

from .config import RunConfig, StageSection


@dataclass
class Components:
    """Every component a config names, created and validated."""

    terms: dict[str, Term]
    weights: dict[str, float]
    parameterizations: dict[str, Parameterization]
    scalers: dict[str, Scaler]
    fcalc: FcalcEngine
    table: ScatteringTable
    optimizer: Optimizer
    weight_scheme: WeightScheme | None
    reporters: list[Reporter]
    initial_steps: list[Step]
    stage_steps: list[list[Step]]


def create_components(registry, config: RunConfig) -> Components:
    """Create every configured component, so config errors surface before any work."""
    reg = registry
    terms: dict[str, Term] = {}
    weights: dict[str, float] = {}
    for key, sec in config.term_sections().items():
        if sec.enabled:
            terms[key] = reg.create("term", sec.component or key, sec.options, f"terms.{key}.options")
            weights[key] = sec.weight
    params = {key: reg.create("parameterization", sec.component or key, sec.options,
                              f"parameters.{key}.options")
              for key, sec in config.parameter_sections().items()}
    scalers = {key: reg.create("scaler", sec.component or key, sec.options, f"scalers.{key}.options")
               for key, sec in config.scaler_sections().items()}
    fcalc = reg.create("fcalc", config.fcalc.engine, config.fcalc.options, "fcalc.options")
    table_name = "xray" if config.fcalc.table == "auto" else config.fcalc.table  # auto: resolved by Run
    table = reg.create("table", table_name, config.fcalc.table_options, "fcalc.table_options")
    optimizer = reg.create("optimizer", config.optimizer.name, config.optimizer.options,
                           "optimizer.options")
    scheme = (reg.create("weight", config.weights.name, config.weights.options, "weights.options")
              if config.weights.name else None)
    reporters = [reg.create("reporter", name, {}, f"reporters[{i}]")
                 for i, name in enumerate(config.reporters)]
    initial = [reg.create("step", raw["step"], {k: v for k, v in raw.items() if k != "step"},
                          f"initial_steps[{j}]") for j, raw in enumerate(config.initial_steps)]
    stage_steps = []
    for i, stage in enumerate(config.stages):
        steps = []
        for j, raw in enumerate(stage.steps):
            opts = {k: v for k, v in raw.items() if k != "step"}
            steps.append(reg.create("step", raw["step"], opts, f"stages[{i}].steps[{j}]"))
        stage_steps.append(steps)
    return Components(terms, weights, params, scalers, fcalc, table, optimizer, scheme,
                      reporters, initial, stage_steps)


def choose_table(registry, model: AtomModel, log: Callable[[str], None]) -> str:
    """Name of the table whose radiation matches the model's experiment (default X-ray)."""
    method = model.experiment_method
    radiation = model.radiation or "xray"
    for name in registry.names("table"):
        if getattr(registry.spec("table", name).load(), "radiation", None) == radiation:
            log(f"scattering table: {name} (experiment method {method or 'not given'})")
            return name
    raise ConfigError(f"no installed scattering table for {radiation} data "
                      f"(experiment method {method!r}); set [fcalc] table", "fcalc.table")


class FcalcMemo(FcalcEngine):
    """An Fcalc engine that reuses F_calc for an atomic state it has already seen.

    Scalers, the σA fit, statistics and the target all ask for F_calc of the
    same model state between minimisations; the last ``size`` results are
    kept and returned (as copies) when the Miller indices and every atomic
    array entering F_calc (xyz, B, U, occupancy, elements, cell) are equal by
    value, so a component that forgets ``mark_changed`` still gets fresh
    values.  ``gradient`` and any other attribute go to the wrapped engine.
    """

    def __init__(self, engine: FcalcEngine, size: int = 3):
        self.engine = engine
        self.name, self.options = engine.name, engine.options
        self.size = size
        self._store: list[tuple[np.ndarray, tuple, np.ndarray]] = []
        self.hits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["engine"], name)

    @property
    def table(self) -> ScatteringTable | None:  # type: ignore[override]
        return self.engine.table

    def setup(self, context) -> None:
        self._store.clear()
        self.engine.setup(context)

    def use_table(self, table: ScatteringTable) -> None:
        self._store.clear()
        self.engine.use_table(table)

    @staticmethod
    def _state(model: AtomModel) -> tuple:
        return (id(model), tuple(model.cell.parameters), model.spacegroup.hall, model.xyz.copy(),
                model.b_iso.copy(), model.occ.copy(), model.u_aniso.copy(), model.has_aniso.copy(),
                np.array(model.element, copy=True), np.array(model.charge, copy=True))

    @staticmethod
    def _same(a: tuple, b: tuple) -> bool:
        return a[:3] == b[:3] and all(x.shape == y.shape and np.array_equal(x, y)
                                      for x, y in zip(a[3:], b[3:]))

    def calc(self, model: AtomModel, hkl: np.ndarray) -> np.ndarray:
        hkl = np.asarray(hkl)
        state = self._state(model)
        for i, (h, s, f) in enumerate(self._store):
            if h.shape == hkl.shape and np.array_equal(h, hkl) and self._same(s, state):
                self._store.insert(0, self._store.pop(i))
                self.hits += 1
                return f.copy()
        f = self.engine.calc(model, hkl)
        self._store.insert(0, (hkl.copy(), state, f.copy()))
        del self._store[self.size:]
        return f

    def gradient(self, model: AtomModel, hkl: np.ndarray, dT_dF: np.ndarray) -> AtomGradient:
        return self.engine.gradient(model, hkl, dT_dF)


class Run:
    """One refinement run; implements the plugin_api ``Context`` protocol."""

    def __init__(self, registry, config: RunConfig, model: AtomModel,
                 data: ReflectionData | MapData | None,
                 log: Callable[[str], None] = print,
                 checkpoint: Callable[["Run", dict], None] | None = None):
        self.registry = registry
        self.config = config
        self.model = model
        self.data = data
        self.cycle = 0
        self.stage: StageSection | None = None
        self.options: dict[str, Any] = {}
        self._log = log
        self._checkpoint = checkpoint
        self._ready: set[str] = set()
        self._range = (config.data.d_max, config.data.d_min)
        n_refl = len(data) if isinstance(data, ReflectionData) else 0
        self._k_total = np.ones(n_refl)
        self._f_part = np.zeros(n_refl, dtype=np.complex128)
        if config.fcalc.table == "auto":
            config.fcalc.table = choose_table(registry, model, log)
        parts = create_components(registry, config)
        self.terms = parts.terms
        self.base_weights = dict(parts.weights)
        self.weights = dict(parts.weights)  # as last used, for statistics
        self.parameterizations = parts.parameterizations
        self.scalers = parts.scalers
        self._fcalc = FcalcMemo(parts.fcalc)
        self._table = parts.table
        self.optimizer = parts.optimizer
        self.weight_scheme = parts.weight_scheme
        self.reporters = parts.reporters
        self.initial_steps = parts.initial_steps
        self.stage_steps = parts.stage_steps

    @property
    def fcalc(self) -> FcalcEngine:
        """The structure-factor engine named in [fcalc] (set up on first use)."""
        if "fcalc" not in self._ready:
            self._ready.add("fcalc")
            self._fcalc.setup(self)
        return self._fcalc

    @property
    def table(self) -> ScatteringTable:
        """The scattering table named in [fcalc] (set up on first use)."""
        if "table" not in self._ready:
            self._ready.add("table")
            self._table.setup(self)
        return self._table

    def scaler(self, name: str) -> Scaler:
        """The configured scaler ``name`` (a key of [scalers])."""
        try:
            return self.scalers[name]
        except KeyError:
            raise ConfigError(f"no scaler '{name}' is configured; add [scalers.{name}]",
                              "scalers") from None

    # ------------------------------------------------------------ reflections
    def _observed(self) -> np.ndarray:
        data = self.data
        if not isinstance(data, ReflectionData):
            raise ConfigError("a reciprocal-space term or scaler needs reflection data, but the "
                              "data are a map; use a real-space preset (e.g. cryo-em)", "terms")
        values = data.f_obs if data.f_obs is not None else data.i_obs
        if values is None:
            raise ConfigError("the data have neither amplitudes nor intensities", "data")
        d_max, d_min = self._range
        keep = np.isfinite(values)
        if d_min:
            keep &= data.d >= d_min
        if d_max:
            keep &= data.d <= d_max
        return keep

    def working_reflections(self) -> ReflectionData:
        """Work-set reflections with observations inside the current resolution range."""
        return self.data.subset(self._observed() & ~self.data.free)

    def free_reflections(self) -> ReflectionData:
        """Test-set reflections with observations inside the current resolution range."""
        return self.data.subset(self._observed() & self.data.free)

    def fmodel_scales(self, reflections: ReflectionData) -> tuple[np.ndarray, np.ndarray]:
        """(k_total, F_part) for rows of a subset of ``data``."""
        return self._k_total[reflections.index], self._f_part[reflections.index]

    def set_fmodel_scales(self, k_total: np.ndarray, f_part: np.ndarray) -> None:
        """Replace the per-reflection scales of all of ``data``."""
        n = len(self.data)
        if len(k_total) != n or len(f_part) != n:
            raise ValueError(f"scales must have {n} rows")
        self._k_total = np.asarray(k_total, dtype=np.float64)
        self._f_part = np.asarray(f_part, dtype=np.complex128)

    # ------------------------------------------------------------ minimisation
    def _check_disjoint(self, params: list[Parameterization], names: list[str]) -> None:
        claimed: dict[str, np.ndarray] = {}
        for p, name in zip(params, names):
            idx = getattr(p, "indices", None)
            for f in p.fields:
                mask = np.zeros(self.model.n_atoms, dtype=bool)
                mask[np.arange(self.model.n_atoms) if idx is None else idx] = True
                if f in claimed and np.any(claimed[f] & mask):
                    raise ConfigError(f"parameterizations {names} both write '{f}' of the same atoms; "
                                      "refine them in separate steps", "stages")
                claimed[f] = claimed.get(f, np.zeros_like(mask)) | mask

    def minimize(self, parameterizations: list[str], terms: list[str] | None = None,
                 max_iter: int = 50) -> dict[str, Any]:
        """Minimise Σ w_i T_i over the named parameterizations; returns figures."""
        names = list(parameterizations)
        for n in names:
            if n not in self.parameterizations:
                raise ConfigError(f"no parameterization '{n}' is configured; add [parameters.{n}]",
                                  "parameters")
        term_names = list(terms) if terms else list(self.terms)
        for n in term_names:
            if n not in self.terms:
                raise ConfigError(f"no term '{n}' is configured; add [terms.{n}]", "terms")
        params = [self.parameterizations[n] for n in names]
        for p in params:
            p.setup(self)
        self._check_disjoint(params, names)
        active = {n: self.terms[n] for n in term_names}
        for t in active.values():
            t.setup(self)
        weights = {n: self.base_weights[n] for n in active}
        if self.weight_scheme is not None:
            weights = self.weight_scheme.weights(self, active, weights)
        self.weights.update(weights)
        model = self.model
        x0 = [p.initial(model) for p in params]
        sizes = np.cumsum([0] + [len(x) for x in x0])
        bounds = [p.bounds(model) for p in params]
        lower = np.concatenate([b[0] for b in bounds])
        upper = np.concatenate([b[1] for b in bounds])

        def apply(x: np.ndarray) -> None:
            for k, p in enumerate(params):
                p.apply(x[sizes[k]:sizes[k + 1]], model)
            model.mark_changed()

        last: dict[str, Any] = {}  # the latest point: the start value is not computed twice

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            if "x" in last and np.array_equal(x, last["x"]):
                return last["value"], last["grad"].copy()
            apply(x)
            total = 0.0
            grad = AtomGradient(model.n_atoms)
            for n, term in active.items():
                res = term.evaluate(model, want_grad=True)
                total += weights[n] * res.value
                grad.add(res.gradient, weights[n])
            g = np.concatenate([p.pullback(grad, model) for p in params])
            last.update(x=np.array(x, dtype=float), value=total, grad=g)
            return total, g.copy()

        start = time.perf_counter()
        x_start = np.concatenate(x0)
        block = self._block_scales(params, active, weights, x0) if len(params) > 1 else None
        scale = np.ones(len(x_start)) if block is None else block

        def scaled(y: np.ndarray) -> tuple[float, np.ndarray]:
            value, g = fun(y / scale)
            return value, g / scale

        f_start, g_start = scaled(x_start * scale)
        if block is not None:  # Hessian ≈ I in these coordinates: a unit step is ¼ of the Newton step
            scale = scale / _newton_length(g_start)
        result = self.optimizer.minimize(scaled, x_start * scale, lower * scale, upper * scale,
                                         max_iter)
        apply(result.x / scale)
        return {"target_start": f_start, "target": result.value,
                "n_evaluations": result.n_evaluations,
                "minimize_seconds": time.perf_counter() - start}

    def _block_scales(self, params: list[Parameterization], active: dict[str, Term],
                      weights: dict[str, float], x0: list[np.ndarray]) -> np.ndarray | None:
        """Per-parameter factors √c̄_k putting the blocks of a joint minimisation on one scale.

        Parameters of different kinds (Å for xyz, Å² for B) differ in
        curvature by orders of magnitude (1l2h: ≈700 for xyz against B under
        the ML target), which a quasi-Newton method started from a scalar
        Hessian copes with badly.  Each block k is therefore minimised in
        y = √c̄_k · p, with c̄_k its mean diagonal curvature
        Σ_i w_i ∂²T_i/∂p² / n_k, estimated from the terms' diagonal atomic
        curvatures C (``evaluate(want_curv=True)``) along one random ±1
        vector v of the block: c̄_k ≈ Σ C·(J v)²/n_k, J v the atomic change
        per unit parameter change (from ``apply``; exact for linear maps).
        None (no scaling) when a term gives no curvature or a non-empty block
        has none.
        """
        model = self.model
        curv = AtomGradient(model.n_atoms)
        for name, term in active.items():
            res = term.evaluate(model, want_grad=False, want_curv=True)
            if res.curvature is None:
                return None
            curv.add(res.curvature, weights[name])
        fields = curv.present()
        base = {f: np.array(getattr(model, f), dtype=float) for f in fields}
        rng = np.random.default_rng(0)
        step = 1e-4
        out = []
        for p, x in zip(params, x0):
            v = rng.choice([-1.0, 1.0], size=len(x))
            p.apply(x + step * v, model)
            moved = {f: (np.asarray(getattr(model, f), float) - base[f]) / step for f in fields}
            p.apply(x, model)
            mean = sum(float(np.sum(getattr(curv, f) * moved[f] ** 2)) for f in fields)
            mean /= max(len(x), 1)
            usable = (mean > 0 and np.isfinite(mean)) or len(x) == 0  # an empty block needs none
            out.append(np.full(len(x), np.sqrt(max(mean, 0.0))) if usable else None)
        model.mark_changed()
        return None if any(o is None for o in out) else np.concatenate(out)

    # ------------------------------------------------------------ macro-cycles
    def log(self, message: str) -> None:
        """Write a line to the run log."""
        self._log(message)

    def set_stage(self, stage: StageSection | None) -> None:
        """Select a stage's resolution range (None: the [data] range)."""
        self.stage = stage
        data = self.config.data
        if stage is None:
            self._range = (data.d_max, data.d_min)
        else:
            self._range = (stage.d_max if stage.d_max is not None else data.d_max,
                           stage.d_min if stage.d_min is not None else data.d_min)

    def statistics(self) -> dict[str, Any]:
        """Every enabled term's statistics at the current model, plus weights."""
        stats: dict[str, Any] = {}
        for name, term in self.terms.items():
            term.setup(self)
            stats.update(term.statistics(self.model))
        stats["weights"] = dict(self.weights)
        data_terms = [n for n, t in self.terms.items() if isinstance(t, DataTarget)]
        if data_terms:  # the data weight relative to restraints (REFMAC's "weight")
            stats["weight"] = self.weights.get(data_terms[0], 1.0)
        return stats

    def run(self) -> dict[str, Any]:
        """Run all stages; return {"cycles": [...], "final": {...}}."""
        for r in self.reporters:
            r.start(self)
        self.set_stage(self.config.stages[0] if self.config.stages else None)
        start = time.perf_counter()
        initial: dict[str, Any] = {"cycle": 0, "stage": "start"}
        for step in self.initial_steps:
            initial.update(step.run(self))
        initial.update(self.statistics())
        initial["seconds"] = time.perf_counter() - start
        cycles = [initial]
        for r in self.reporters:
            r.cycle_end(self, initial)
        total = 0
        for stage, steps in zip(self.config.stages, self.stage_steps):
            self.set_stage(stage)
            for _ in range(stage.cycles):
                total += 1
                self.cycle = total
                start = time.perf_counter()
                record: dict[str, Any] = {"cycle": total, "stage": stage.name}
                for step in steps:
                    record.update(step.run(self))
                record.update(self.statistics())
                record["seconds"] = time.perf_counter() - start
                cycles.append(record)
                for r in self.reporters:
                    r.cycle_end(self, record)
                self.registry.hook().refinekit_cycle_end(context=self, stats=record)
                if self._checkpoint is not None:
                    self._checkpoint(self, {"cycles": cycles})
        self.set_stage(None)
        final = {"cycles_run": total, "fcalc_engine": self.config.fcalc.engine,
                 "scattering_table": self.config.fcalc.table, **self.statistics()}
        summary = {"cycles": cycles, "final": final}
        for r in self.reporters:
            r.finish(self, summary)
        return summary


NEWTON_DAMPING_LOG2 = 2  # the first step is 1/4 of the diagonal Newton step


def _newton_length(g: np.ndarray) -> float:
    """Power of two nearest |g|: rescaling block-scaled coordinates by it makes a unit step −g.

    After :meth:`Run._block_scales` the Hessian is ≈ I, so the diagonal
    Newton step from the start is −g, of length |g|.  Quasi-Newton codes
    start with a step of unit length (L-BFGS-B: ‖d‖ = 1, Byrd et al. 1995),
    far shorter than that for a whole model (1l2h: |g| ≈ 200), and spend
    evaluations extrapolating; dividing the coordinates by |g| turns the
    unit first step into the Newton step (Nocedal & Wright 2006,
    *Numerical Optimization*, §7.2 on the initial matrix H₀ and §3.5 on
    initial step lengths).  A power of two keeps x·s/s exact, so the
    start value is not computed twice.
    """
    norm = float(np.linalg.norm(g))
    return 2.0 ** (round(math.log2(norm)) - NEWTON_DAMPING_LOG2) if norm > 0 and math.isfinite(norm) else 1.0
