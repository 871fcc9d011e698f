"""Data/restraint weight for real-space refinement from trial refinements of segments.

Method of phenix.real_space_refine (Afonine et al. 2018, Acta Cryst. D74,
531–544, §2.7): the model is cut into random segments of a few residues;
each segment is refined alone, in the map, with a ladder of data weights;
for each segment the weight kept is the one giving the best fit among
those whose geometry stays reasonable (bond rmsd ≤ ``bond_rmsd_max`` Å,
angle rmsd ≤ ``angle_rmsd_max`` degrees); outlying segment weights are
dropped and the rest averaged (geometric mean).  The cost depends on the
number and size of the segments, not on the size of the model.

The ladder is centred on w_ref, the median over segments of ‖∇R‖/‖∇D‖
(restraints R, data term D, at the starting coordinates), so it adapts to
the data term's units; it is walked by bisection (geometry worsens
monotonically with the data weight).
Fit is the data term's value per atom after the trial (lower is better).

A coordinate minimisation whose data terms are all listed in ``match``
(e.g. ``map-cc`` after ``map-value``) is weighted without trials: its data
weight is set so that the data terms' curvature along a random coordinate
step equals that of the reference term at its searched weight (same
stiffness, so the same balance against the restraints).

Minimisations without bond/angle restraints (B refinement: a map term with
ADP similarity) get a data weight from the gradient balance at the start,
w = adp_scale · ‖∇R‖/‖∇D‖ over the restrained parameters (the rule that
centres the coordinate ladder; for a model whose B values already satisfy
the restraints, ‖∇R‖ is taken after a 1 Å² rms step of the data's
steepest descent).  The ratio adapts to the data term's units (−CC for
``map-cc`` has B gradients of order 1/N).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gemmi
import numpy as np
import scipy.optimize

from refinekit.plugin_api import AtomModel, ConfigError, InputError, MapData, Term, WeightScheme
from refinekit.plugin_api.numerics.maps import d99


@dataclass
class RsrSearchOptions:
    """Settings of ``rsr-search`` (lengths in residues, rmsd in Å and degrees).

    segment_length: residues per segment; n_segments: segments tried
    (fewer when the model is small); n_weights / span: ladder of n_weights
    weights w_ref·10^t, t evenly in [−span, +span] decades (extended by up
    to its own length when needed); max_iter: L-BFGS-B iterations per
    trial; outlier_mad: segment weights whose log10 differs from the median
    by more than outlier_mad × max(1.4826 × MAD, one ladder step) are dropped; seed: random seed
    for the choice of segments; every: search again every this many cycles
    (0: once, at the first minimisation that needs it); adp_scale: multiplies
    the gradient-balance data weight of minimisations without bond/angle
    restraints (B refinement); tighten_start (Å) / tighten_power: for a
    map of resolution d > tighten_start the rmsd limits are multiplied by
    (tighten_start/d)^tighten_power (low-resolution maps hold the atoms
    weakly: with the 3 Å limits the simulated exact model drifts 0.6–0.9 Å
    at 4–6 Å; docs/benchmarks.md); 0 switches this off; use_d99: the
    resolution of that rule is max(d, d99), d99 the map's own resolution
    (Afonine et al. 2018, Acta Cryst. D74, 814–840): a map blurred by a
    large overall B holds the atoms as weakly as a low-resolution one,
    whatever its nominal d (simulated 1 Å maps with B = 200 Å² have d99 ≈ 5 Å);
    match: data term → reference data term: a coordinate minimisation whose
    data terms all map to one reference is not searched but weighted by
    curvature matching to the reference's searched weight (:meth:`RsrWeightSearch.matched`;
    for targets too costly for segment trials, e.g. ``map-cc`` on a fine grid);
    match_step: rms coordinate step (Å) of that curvature estimate.
    """

    segment_length: int = 5
    n_segments: int = 10
    n_weights: int = 9
    span: float = 1.0
    bond_rmsd_max: float = 0.02
    angle_rmsd_max: float = 2.0
    max_iter: int = 40
    outlier_mad: float = 3.0
    seed: int = 0
    every: int = 0
    adp_scale: float = 1.0
    tighten_start: float = 3.0
    tighten_power: float = 2.0
    use_d99: bool = True
    match: dict = field(default_factory=dict)
    match_step: float = 0.01

    def validate(self) -> None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.match.items()):
            raise ValueError("match must map data-term names to data-term names")
        if not self.match_step > 0:
            raise ValueError(f"match_step must be > 0 Å, got {self.match_step}")
        if self.segment_length < 2 or self.n_segments < 1 or self.n_weights < 2:
            raise ValueError("need segment_length ≥ 2, n_segments ≥ 1 and n_weights ≥ 2")
        if self.span <= 0 or self.outlier_mad <= 0:
            raise ValueError("span and outlier_mad must be > 0")
        if self.bond_rmsd_max <= 0 or self.angle_rmsd_max <= 0:
            raise ValueError("bond_rmsd_max (Å) and angle_rmsd_max (degrees) must be > 0")
        if self.max_iter < 1 or self.every < 0:
            raise ValueError("max_iter must be ≥ 1 and every ≥ 0")
        if not self.adp_scale > 0:
            raise ValueError("adp_scale must be > 0")
        if not self.tighten_start > 0 or self.tighten_power < 0:
            raise ValueError("need tighten_start > 0 Å and tighten_power ≥ 0")

    def limits(self, d: float | None) -> tuple[float, float]:
        """(bond rmsd limit Å, angle rmsd limit degrees) for a map of resolution d Å."""
        if d is None or d <= self.tighten_start:
            return self.bond_rmsd_max, self.angle_rmsd_max
        f = (self.tighten_start / d) ** self.tighten_power
        return self.bond_rmsd_max * f, self.angle_rmsd_max * f


def _for_resolution(report: dict) -> str:
    """" for d X Å (d99 Y Å)" for the search's log line ("" when no resolution is known)."""
    d = report.get("limit_resolution")
    if d is None:
        return ""
    return f" for d {d:.2f} Å" + (f" (map d99 {report['d99']:.2f} Å)" if "d99" in report else "")


class SegmentContext:
    """The run context seen by a segment's private copies of the terms."""

    def __init__(self, context, model: AtomModel):
        self.model = model
        self.data = context.data
        self.cycle = context.cycle
        self.options = getattr(context, "options", {})
        self._context = context

    @property
    def fcalc(self):
        return self._context.fcalc

    @property
    def table(self):
        return self._context.table

    def log(self, message: str) -> None:
        """Segment terms' messages are not logged (they repeat the run's)."""


def segment_windows(model: AtomModel, length: int, count: int,
                    rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to ``count`` non-overlapping (chain index, first residue index) windows of
    ``length`` consecutive polymer residues, in random order."""
    st_model = model.structure[0]
    windows = []
    for ci, chain in enumerate(st_model):
        info = [gemmi.find_tabulated_residue(r.name) for r in chain]
        polymer = [i is not None and i.is_amino_acid() for i in info]
        for ri in range(len(chain) - length + 1):
            if all(polymer[ri:ri + length]):
                windows.append((ci, ri))
    taken: set[tuple[int, int]] = set()
    chosen = []
    for k in rng.permutation(len(windows)):
        ci, ri = windows[k]
        span = {(ci, r) for r in range(ri, ri + length)}
        if span & taken:
            continue
        taken |= span
        chosen.append((ci, ri))
        if len(chosen) == count:
            break
    return chosen


def segment_model(st: gemmi.Structure, ci: int, ri: int, length: int) -> AtomModel:
    """A new AtomModel of residues ri..ri+length−1 of chain ci of ``st`` (current coordinates)."""
    sub = gemmi.Structure()
    sub.cell = st.cell
    sub.spacegroup_hm = st.spacegroup_hm
    model = gemmi.Model("1")
    source = st[0][ci]
    chain = gemmi.Chain(source.name)
    for r in range(ri, ri + length):
        chain.add_residue(source[r])
    model.add_chain(chain)
    sub.add_model(model)
    sub.setup_entities()
    return AtomModel.from_structure(sub)


def robust_mean_log(weights: np.ndarray, cutoff: float, floor: float = 0.0) -> tuple[float, np.ndarray]:
    """Geometric mean of ``weights`` after dropping log10 outliers; returns (mean, kept mask).

    Outlier: |log10 w − median| > cutoff × max(1.4826 × MAD, floor), MAD of
    log10 w; ``floor`` (decades, e.g. one ladder step) keeps a spread of one
    rung from counting as an outlier when most segments agree exactly.
    """
    x = np.log10(weights)
    med = float(np.median(x))
    scale = max(1.4826 * float(np.median(np.abs(x - med))), floor)
    keep = np.abs(x - med) <= cutoff * scale + 1e-12
    return float(10 ** x[keep].mean()), keep


class RsrWeightSearch(WeightScheme):
    """Weight scheme ``rsr-search``: one data-weight factor from segment trial refinements.

    Applies to minimisations that include both a data term (role "target")
    and a restraint reporting ``rmsd_bonds`` and ``rmsd_angles`` (those whose
    data terms are all keys of ``match`` get the curvature-matched factor of
    :meth:`matched` instead); other
    minimisations with a data term and restraints (B refinement) get the
    gradient-balance factor of :meth:`balance`; without restraints the
    configured weights are kept.  The factor multiplies every data term's
    weight; one choice per set of data terms (and again every ``every``
    cycles when set).
    """

    name = "rsr-search"
    Options = RsrSearchOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.factors: dict[frozenset, tuple[float, int]] = {}
        #: data-term names → (searched factor, {name: (term, configured weight)})
        self.searched: dict[frozenset, tuple[float, dict[str, tuple[Term, float]]]] = {}
        self.report: dict[str, Any] = {}

    def weights(self, context, terms: dict[str, Term], current: dict[str, float]) -> dict[str, float]:
        data = frozenset(n for n, t in terms.items() if t.role == "target")
        restrained = any(t.role == "restraint" for t in terms.values())
        if not data or not restrained:
            return dict(current)
        key = data | {"restraints:" + ",".join(sorted(n for n, t in terms.items() if t.role == "restraint"))}
        every = self.options.every
        if key not in self.factors or (every and context.cycle - self.factors[key][1] >= every):
            if not self._has_geometry(context, terms):
                choose = self.balance
            elif data <= set(self.options.match):
                choose = self.matched
            else:
                choose = self.search
            self.factors[key] = (choose(context, terms, current), context.cycle)
            if choose == self.search:
                self.searched[data] = (self.factors[key][0], {n: (terms[n], current[n]) for n in data})
        factor = self.factors[key][0]
        return {n: w * factor if n in data else w for n, w in current.items()}

    # -------------------------------------------------------------- curvature matching
    def matched(self, context, terms: dict[str, Term], current: dict[str, float]) -> float:
        """Data-weight factor f with f·Σ w_t c_t = Σ F_ref w_r c_r (curvature matching).

        c: mean curvature of a term along one random coordinate step δ (rms
        ``match_step`` Å, seed ``seed``), c = δ·(∇T(x+δ) − ∇T(x))/|δ|², at
        the current model; t: this minimisation's data terms, r: their
        reference terms (``match``) as last weighted by the segment search
        (F_ref·w_r).  The data terms then hold the atoms as stiffly as the
        searched reference did, so the restraints keep the balance the
        search chose.
        """
        data = {n: t for n, t in terms.items() if t.role == "target"}
        refs = frozenset(self.options.match[n] for n in data)
        if refs not in self.searched:
            raise ConfigError(f"weight scheme 'rsr-search': the weight of {', '.join(sorted(data))} is "
                              f"matched to {', '.join(sorted(refs))}, which no earlier coordinate "
                              "minimisation has searched; refine xyz against it first",
                              "weights.options.match")
        rng = np.random.default_rng(self.options.seed)
        step = rng.normal(size=context.model.xyz.shape) * self.options.match_step
        ref_factor, ref_terms = self.searched[refs]
        c_ref = sum(w * ref_factor * self._curvature(t, context.model, step) for t, w in ref_terms.values())
        c_data = sum(current[n] * self._curvature(t, context.model, step) for n, t in data.items())
        if not (c_ref > 0 and c_data > 0):
            raise InputError(f"weight scheme 'rsr-search': curvature matching needs positive curvatures "
                             f"(reference {c_ref:.3g}, {', '.join(sorted(data))} {c_data:.3g})")
        factor = c_ref / c_data
        self.report[f"match:{','.join(sorted(data))}"] = factor
        context.log(f"rsr weight ({', '.join(sorted(data))}): data weight factor {factor:.4g} by curvature "
                    f"matching to {', '.join(sorted(refs))} (factor {ref_factor:.4g})")
        return factor

    @staticmethod
    def _curvature(term: Term, model: AtomModel, step: np.ndarray) -> float:
        """δ·(∇T(x+δ) − ∇T(x))/|δ|² for the xyz step δ (Å); the model is restored."""
        x = model.xyz.copy()
        g0 = term.evaluate(model, want_grad=True).gradient.xyz
        model.xyz[:] = x + step
        model.mark_changed()
        g1 = term.evaluate(model, want_grad=True).gradient.xyz
        model.xyz[:] = x
        model.mark_changed()
        return float(np.sum((g1 - g0) * step) / np.sum(step * step))

    @staticmethod
    def _has_geometry(context, terms: dict[str, Term]) -> bool:
        """True when a restraint reports bond and angle rmsd (coordinate refinement)."""
        for term in terms.values():
            if term.role == "restraint":
                stats = term.statistics(context.model)
                if "rmsd_bonds" in stats and "rmsd_angles" in stats:
                    return True
        return False

    # -------------------------------------------------------------- B refinement
    def balance(self, context, terms: dict[str, Term], current: dict[str, float]) -> float:
        """Data-weight factor adp_scale·‖∇R‖/‖∇D‖ over the fields the restraints act on.

        ∇R, ∇D: weighted gradient sums of the restraints and data terms at
        the current model.  When ∇R vanishes there (e.g. equal B values),
        it is taken after moving those fields by a 1-unit rms step (1 Å²
        for B) down the data gradient, then the model is restored.
        """
        model = context.model
        data = {n: t for n, t in terms.items() if t.role == "target"}
        restraints = {n: t for n, t in terms.items() if t.role != "target"}
        g_r = self._gradient(model, restraints, current)
        fields = [f for f, g in g_r.items() if g is not None]
        g_d = self._gradient(model, data, current)
        norm_d = np.sqrt(sum(float(np.vdot(g_d[f], g_d[f])) for f in fields if g_d.get(f) is not None))
        if not fields or norm_d == 0.0:
            raise InputError("weight scheme 'rsr-search': the data terms have no gradient with respect "
                             f"to the restrained parameters ({', '.join(fields) or 'none'})")
        norm_r = self._norm(g_r, fields)
        if norm_r == 0.0:
            saved = {f: getattr(model, f).copy() for f in fields}
            n = sum(g_d[f].size for f in fields)
            for f in fields:
                getattr(model, f)[...] -= g_d[f] * (np.sqrt(n) / norm_d)
            model.mark_changed()
            norm_r = self._norm(self._gradient(model, restraints, current), fields)
            for f in fields:
                getattr(model, f)[...] = saved[f]
            model.mark_changed()
        factor = self.options.adp_scale * norm_r / norm_d
        self.report[f"balance:{','.join(sorted(data))}"] = factor
        context.log(f"rsr weight ({', '.join(sorted(data))} with {', '.join(sorted(restraints))}, "
                    f"{', '.join(fields)}): data weight factor {factor:.4g} from the gradient balance")
        return factor

    @staticmethod
    def _gradient(model: AtomModel, terms: dict[str, Term], current: dict[str, float]) -> dict:
        """Weighted gradient sum of ``terms``: field name → array (None: no term has it)."""
        total: dict[str, np.ndarray | None] = {}
        for name, term in terms.items():
            grad = term.evaluate(model, want_grad=True).gradient
            for f in ("xyz", "b_iso", "u_aniso", "occ"):
                g = getattr(grad, f, None) if grad is not None else None
                if g is not None:
                    total[f] = total.get(f, 0.0) + current[name] * np.asarray(g, dtype=np.float64)
                else:
                    total.setdefault(f, None)
        return total

    @staticmethod
    def _norm(grad: dict, fields: list[str]) -> float:
        return float(np.sqrt(sum(float(np.vdot(grad[f], grad[f])) for f in fields if grad.get(f) is not None)))

    # -------------------------------------------------------------- search
    def search(self, context, terms: dict[str, Term], current: dict[str, float]) -> float:
        """Run the segment trials; return the data-weight factor (also kept in ``report``)."""
        if not isinstance(context.data, MapData):
            raise ConfigError("weight scheme 'rsr-search' needs a density map as data "
                              f"(got {type(context.data).__name__}); use 'auto' for reflections",
                              "weights.name")
        o = self.options
        start = time.perf_counter()
        rng = np.random.default_rng(o.seed)
        windows = segment_windows(context.model, o.segment_length, o.n_segments, rng)
        if not windows:
            raise InputError(f"weight search: the model has no run of {o.segment_length} consecutive "
                             "amino-acid residues to cut segments from; set [weights] options "
                             "segment_length or use another weight scheme", context.model.source or None)
        st = context.model.to_structure()
        segments = [self._segment(context, terms, current, st, ci, ri) for ci, ri in windows]
        w_ref = float(np.median([s.reference_weight() for s in segments]))
        limits = o.limits(self._limit_resolution(context.data))
        chosen = np.array([s.choose(w_ref, o, limits) for s in segments])
        valid = np.isfinite(chosen)
        if not valid.any():
            factor, kept = w_ref * 10 ** (-3 * o.span), valid
            note = "no segment kept acceptable geometry at any weight; using the smallest tried"
        else:
            step = 2.0 * o.span / (o.n_weights - 1)
            factor, kept_valid = robust_mean_log(chosen[valid], o.outlier_mad, step)
            kept = np.zeros_like(valid)
            kept[np.flatnonzero(valid)[kept_valid]] = True
            note = ""
        seconds = time.perf_counter() - start
        self.report.update({"weight_factor": factor, "w_ref": w_ref, "segments": len(segments),
                            "kept": int(kept.sum()),
                            "segment_weights": [float(w) if np.isfinite(w) else None for w in chosen],
                            "bond_rmsd_max": limits[0], "angle_rmsd_max": limits[1],
                            "seconds": seconds})
        context.log(f"rsr weight search: {len(segments)} segments of {o.segment_length} residues, "
                    f"{kept.sum()} kept, data weight factor {factor:.4g} "
                    f"(ladder centre {w_ref:.3g}; limits {limits[0]:.3g} Å, {limits[1]:.3g}°"
                    f"{_for_resolution(self.report)}) in {seconds:.1f} s"
                    + (f"; {note}" if note else ""))
        return factor

    def _limit_resolution(self, m: MapData) -> float | None:
        """The resolution (Å) the rmsd limits are set for: max(d, d99) or the nominal d."""
        d = m.resolution
        if self.options.use_d99:
            self.report["d99"] = d99(m)
            d = self.report["d99"] if d is None else max(d, self.report["d99"])
        self.report["limit_resolution"] = d
        return d

    def _segment(self, context, terms, current, st, ci, ri) -> "Segment":
        model = segment_model(st, ci, ri, self.options.segment_length)
        sub_context = SegmentContext(context, model)
        data, restraints = {}, {}
        for name, term in terms.items():
            copy = type(term)(term.options)
            copy.setup(sub_context)
            (data if term.role == "target" else restraints)[name] = (copy, current[name])
        return Segment(model, data, restraints)


class Segment:
    """One segment with private term copies: trial refinements over a weight ladder."""

    def __init__(self, model: AtomModel, data: dict, restraints: dict):
        self.model = model
        self.start = model.xyz.copy()
        self.data = list(data.values())
        self.restraints = list(restraints.values())

    def _sum(self, parts, want_grad: bool) -> tuple[float, np.ndarray]:
        value, grad = 0.0, np.zeros_like(self.model.xyz)
        for term, weight in parts:
            res = term.evaluate(self.model, want_grad=want_grad)
            value += weight * res.value
            if want_grad and res.gradient is not None and res.gradient.xyz is not None:
                grad += weight * res.gradient.xyz
        return value, grad

    def _set(self, xyz: np.ndarray) -> None:
        self.model.xyz = np.ascontiguousarray(xyz.reshape(-1, 3))
        self.model.mark_changed()

    def reference_weight(self) -> float:
        """‖∇R‖/‖∇D‖ at the starting coordinates (the ladder's centre)."""
        self._set(self.start)
        _, gd = self._sum(self.data, True)
        _, gr = self._sum(self.restraints, True)
        return float(np.linalg.norm(gr) / max(np.linalg.norm(gd), 1e-300))

    def trial(self, factor: float, max_iter: int) -> tuple[float, float, float]:
        """Refine xyz from the start with data weights × factor; (fit per atom, bond rmsd Å, angle rmsd °)."""
        data = [(t, w * factor) for t, w in self.data]

        def fun(x):
            self._set(x)
            vd, gd = self._sum(data, True)
            vr, gr = self._sum(self.restraints, True)
            return vd + vr, (gd + gr).ravel()

        res = scipy.optimize.minimize(fun, self.start.ravel(), jac=True, method="L-BFGS-B",
                                      options={"maxiter": max_iter})
        self._set(res.x)
        fit = self._sum(self.data, False)[0] / self.model.n_atoms
        bonds = angles = 0.0
        for term, _ in self.restraints:
            stats = term.statistics(self.model)
            bonds = max(bonds, float(stats.get("rmsd_bonds", 0.0)))
            angles = max(angles, float(stats.get("rmsd_angles", 0.0)))
        self._set(self.start)
        return fit, bonds, angles

    def choose(self, w_ref: float, o: RsrSearchOptions,
               limits: tuple[float, float] | None = None) -> float:
        """The ladder weight with the best fit among those with acceptable geometry (NaN: none).

        Ladder: w_k = w_ref·10^(−span + k·δ), δ = 2·span/(n_weights − 1).
        Geometry worsens monotonically as w grows, so the acceptable weights
        are the rungs below a threshold: the threshold is found by bisection
        over the rungs (extending the ladder by up to its own length above or
        below when every / no rung is acceptable), about log2(n_weights) + 2
        trials per segment.  The best fit among the acceptable rungs tried
        is returned.  ``limits``: (bond Å, angle degrees) rmsd limits, by
        default the options' (the search passes :meth:`RsrSearchOptions.limits`).
        """
        bond_max, angle_max = limits if limits is not None else (o.bond_rmsd_max, o.angle_rmsd_max)
        n, step = o.n_weights, 2.0 * o.span / (o.n_weights - 1)
        tried: dict[int, tuple[float, bool]] = {}

        def ok(k: int) -> bool:
            if k not in tried:
                fit, bonds, angles = self.trial(w_ref * 10 ** (-o.span + k * step), o.max_iter)
                tried[k] = (fit, bonds <= bond_max and angles <= angle_max)
            return tried[k][1]

        lo, hi = 0, n - 1  # invariant once bracketed: ok(lo) and not ok(hi)
        if not ok(lo):
            lo = next((k for k in range(-1, -n, -1) if ok(k)), None)
            if lo is None:
                return float("nan")
            hi = lo + 1
        elif ok(hi):
            hi = next((k for k in range(n, 2 * n - 1) if not ok(k)), None)
            if hi is None:
                lo = 2 * n - 2
                hi = lo + 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        best = min((fit, k) for k, (fit, good) in tried.items() if good)[1]
        return float(w_ref * 10 ** (-o.span + best * step))
