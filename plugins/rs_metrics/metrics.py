"""Model-to-map correlation metrics CC_mask and CC_box.

Definitions of Afonine et al. (2018), Acta Cryst. D74, 814–840 (§2.3): the
Pearson correlation between the experimental map and a model map calculated
at the map's resolution d,

* CC_box over every grid point of the (boxed) map;
* CC_mask over the grid points within ``mask_radius`` (Å) of the non-H atoms
  (for a chain or residue: of its own non-H atoms).

The model map comes from the run's Fcalc engine (box = P1 unit cell, sharp
resolution cut; :class:`refinekit.plugin_api.numerics.maps.BoxModelMap`), so
the scattering table is whatever the run uses (electron for cryo-EM when
configured; X-ray factors give slightly different values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from refinekit.plugin_api import AtomModel, InputError, MapData, Step
from refinekit.plugin_api.numerics.maps import (BoxModelMap, check_resolution, correlation,
                                                points_near_atoms)


@dataclass
class RealSpaceMetricsOptions:
    """mask_radius: Å around non-H atoms; resolution: d in Å (None: the map's);
    per_chain / per_residue: also report CC_mask for each chain / residue."""

    mask_radius: float = 2.5
    resolution: float | None = None
    per_chain: bool = True
    per_residue: bool = True

    def validate(self) -> None:
        if not self.mask_radius > 0:
            raise ValueError(f"mask_radius must be > 0 Å, got {self.mask_radius}")


def grouped_correlations(obs: np.ndarray, calc: np.ndarray, group: np.ndarray,
                         flat: np.ndarray, n_groups: int) -> np.ndarray:
    """CC per group over the union of each group's grid points (NaN for < 2 points).

    ``group[i]`` and ``flat[i]`` pair an atom's group with a grid point near
    it; duplicates (points near several atoms of a group) count once.
    """
    size = obs.size
    pairs = np.unique(group.astype(np.int64) * size + flat)
    g, f = pairs // size, pairs % size
    o, c = obs.ravel()[f].astype(np.float64), calc.ravel()[f].astype(np.float64)

    def total(x):
        return np.bincount(g, weights=x, minlength=n_groups)

    n = np.bincount(g, minlength=n_groups).astype(np.float64)
    so, sc = total(o), total(c)
    num = n * total(o * c) - so * sc
    den = np.sqrt(np.maximum(n * total(o * o) - so ** 2, 0) * np.maximum(n * total(c * c) - sc ** 2, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n >= 2) & (den > 0), num / den, np.nan)


def _json_float(value: float) -> float | None:
    """A JSON-safe number: None for NaN (a group with fewer than 2 grid points)."""
    return float(value) if np.isfinite(value) else None


def _labels(model: AtomModel, heavy: np.ndarray) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Chain and residue names and the group index of each selected atom."""
    refs = model.atom_ref[heavy]
    st_model = model.structure[0]
    chain_ids, chain_of = np.unique(refs[:, 0], return_inverse=True)
    chains = [st_model[int(c)].name for c in chain_ids]
    res_ids, res_of = np.unique(refs[:, 0] * 1_000_000 + refs[:, 1], return_inverse=True)
    residues = []
    for r in res_ids:
        chain = st_model[int(r // 1_000_000)]
        res = chain[int(r % 1_000_000)]
        residues.append(f"{chain.name}/{res.name} {res.seqid.num}{res.seqid.icode.strip()}")
    return chains, chain_of, residues, res_of


def rs_metrics(model: AtomModel, m: MapData, engine, d_min: float, mask_radius: float = 2.5,
               per_chain: bool = True, per_residue: bool = True) -> dict[str, Any]:
    """CC_mask and CC_box (overall; optionally per chain and per residue) as a JSON-ready dict.

    A chain or residue whose mask holds fewer than 2 grid points gets None.
    """
    calc = BoxModelMap(engine, m, d_min, model.structure).compute(model)
    heavy = np.flatnonzero(~model.is_hydrogen)
    atom, flat = points_near_atoms(m, model.xyz[heavy], mask_radius)
    mask = np.unique(flat)
    obs = m.values
    out: dict[str, Any] = {
        "cc_mask": correlation(obs.ravel()[mask], calc.ravel()[mask]),
        "cc_box": correlation(obs, calc),
        "rs_resolution": d_min,
        "rs_mask_radius": mask_radius,
    }
    if per_chain or per_residue:
        chains, chain_of, residues, res_of = _labels(model, heavy)
        if per_chain:
            cc = grouped_correlations(obs, calc, chain_of[atom], flat, len(chains))
            out["cc_mask_chain"] = {name: _json_float(v) for name, v in zip(chains, cc)}
        if per_residue:
            cc = grouped_correlations(obs, calc, res_of[atom], flat, len(residues))
            out["cc_mask_residue"] = {name: _json_float(v) for name, v in zip(residues, cc)}
    return out


class RealSpaceMetrics(Step):
    """Step ``rs-metrics``: CC_mask/CC_box of the current model against the run's map.

    Returns the figures (overall, per chain, per residue) for the cycle
    statistics / stats.json; changes nothing.
    """

    name = "rs-metrics"
    Options = RealSpaceMetricsOptions

    def run(self, context) -> dict[str, Any]:
        m = context.data
        if not isinstance(m, MapData):
            raise InputError(f"step 'rs-metrics' needs a density map as data (got {type(m).__name__})")
        o = self.options
        d = check_resolution(o.resolution if o.resolution is not None else m.resolution, m)
        return rs_metrics(context.model, m, context.fcalc, d, o.mask_radius, o.per_chain, o.per_residue)
