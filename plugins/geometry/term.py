"""Restraint terms ``geometry`` and ``adp-similarity``.

``geometry`` is the REFMAC/servalcat stereochemical target (Murshudov et al.,
Acta Cryst. D67, 355 (2011); Yamashita et al., Acta Cryst. D79, 368 (2023)):
bonds, angles, torsions, chiral volumes, planes from the CCP4 Monomer Library
through gemmi's topology, plus non-bonded repulsion including contacts with
symmetry mates.  ``adp-similarity`` restrains B of bonded (1-2) and angle
(1-3) neighbours to be similar (REFMAC's "BFAC" restraint, isotropic form).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from refinekit.plugin_api import AtomGradient, AtomModel, MapData, Restraint, TermResult

from . import kernels
from .library import read_library
from .nonbonded import Nonbonded, VdwParameters
from .topology import RestraintTables, build_tables, select_torsions

_DUMMY = np.zeros((1, 3))
B_MIN_KL = 1.0  # Å²; smaller B (e.g. of anisotropic atoms with B_iso 0) enter the KL form as this


@dataclass
class LibraryOptions:
    """Where the dictionaries come from and how links are decided (shared by both terms).

    ``hydrogen_distances``: X–H targets at the electron-cloud centre (X-ray) or
    the nucleus; "auto" = nucleus for neutron and electron scattering and for
    maps (the run's scattering table, else the model file's experiment
    method), electron-cloud otherwise.
    """

    monlib: str | None = None
    ligands: list[str] = field(default_factory=list)
    cis_peptides: Literal["auto", "records", "geometry"] = "auto"
    link_distance: float = 4.0
    hydrogen_distances: Literal["auto", "electron", "nucleus"] = "auto"

    def validate(self) -> None:
        if self.link_distance <= 0:
            raise ValueError("link_distance must be > 0 Å")


def nucleus_distances(options: LibraryOptions, model: AtomModel, context=None) -> bool:
    """Whether X–H targets are nuclear distances (see ``LibraryOptions``)."""
    if options.hydrogen_distances != "auto":
        return options.hydrogen_distances == "nucleus"
    if isinstance(getattr(context, "data", None), MapData):
        return True
    table = getattr(context, "table", None)
    radiation = getattr(table, "radiation", None) or model.radiation
    return radiation in ("neutron", "electron")


_last_tables: list = []  # [(key, structure, (lib, tables))]: geometry and adp-similarity share one build


def load_tables(model: AtomModel, options: LibraryOptions, nucleus: bool = False):
    """(MonLib, RestraintTables) for ``model``; ``nucleus``: X–H targets at nuclei.

    The last result is reused for the same structure, atoms and library
    settings (the restraint tables are read-only).
    """
    key = (model.n_atoms, options.monlib, os.environ.get("REFINEKIT_MONLIB"), os.environ.get("CLIBD_MON"),
           tuple(options.ligands), options.cis_peptides, options.link_distance, nucleus)
    if _last_tables and _last_tables[0][0] == key and _last_tables[0][1] is model.structure:
        return _last_tables[0][2]
    lib = read_library(model.structure, options.monlib, list(options.ligands))
    result = lib, build_tables(model, lib, options.cis_peptides, options.link_distance, nucleus)
    _last_tables[:] = [(key, model.structure, result)]
    return result


@dataclass
class GeometryOptions(LibraryOptions):
    """Options of ``geometry``; σ in Å (distances), Å³ (chiral volumes).

    ``symmetry`` None: contacts with symmetry mates unless the data are a map.
    Torsions: ``GROUP:LABEL`` globs (see ``topology.select_torsions``); the
    default restrains what REFMAC/servalcat restrain by default — side-chain
    χ of ``peptide``-group amino acids (not Pro's ring), ω of links and sp2–sp2
    torsions — and leaves φ/ψ
    and sp3 torsions to the data (restraining the library's φ/ψ targets pulls
    a correct backbone away from the density).  ``["*:*"]`` restrains all.
    """

    torsions: bool = True
    torsion_include: list[str] = field(
        default_factory=lambda: ["peptide:chi*", "link:omega", "*:sp2_sp2*"])
    torsion_exclude: list[str] = field(default_factory=list)
    sigma_chiral: float = 0.2
    nonbonded: bool = True
    symmetry: bool | None = None
    sigma_vdw: float = 0.3
    sigma_vdw_14: float = 0.5
    sigma_hbond: float = 0.5
    sigma_metal: float = 0.5
    incr_14: float = -0.75
    incr_hbond: float = -0.2
    incr_h_hbond: float = 0.2
    neighbour_buffer: float = 1.0
    weight_nonbonded: float = 1.0

    def validate(self) -> None:
        super().validate()
        for name in ("sigma_chiral", "sigma_vdw", "sigma_vdw_14", "sigma_hbond", "sigma_metal"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.neighbour_buffer < 0 or self.weight_nonbonded < 0:
            raise ValueError("neighbour_buffer and weight_nonbonded must be >= 0")


class GeometryRestraint(Restraint):
    """Stereochemical restraints from the CCP4 Monomer Library (REFMAC-style).

    T = Σ_b ((d−d0)/σ)² + Σ_a ((θ−θ0)/σ)² + Σ_t (Δφ_n/σ)² + Σ_c ((V−V0)/σ)²
    + Σ_p Σ_k (n·(x_k−x̄)/σ)² + w_vdw Σ_pairs ((d−d_min)/σ)²[d<d_min]
    (Murshudov et al., Acta Cryst. D67, 355 (2011)); topology by gemmi.
    """

    name: ClassVar[str] = "geometry"
    Options: ClassVar[type] = GeometryOptions

    def setup(self, context) -> None:
        model = context.model
        key = (id(model.structure), model.n_atoms)
        if getattr(self, "_built_for", None) == key:
            return  # topology and neighbour list are kept across minimisations
        self._built_for = key
        o = self.options
        self.lib, tables = load_tables(model, o, nucleus_distances(o, model, context))
        self.tables = select_torsions(tables, o.torsion_include, o.torsion_exclude)
        self.nonbonded = None
        if o.nonbonded:
            # default: crystal contacts unless the data are a (cryo-EM) map
            symmetry = (o.symmetry if o.symmetry is not None
                        else not isinstance(getattr(context, "data", None), MapData))
            params = VdwParameters(o.sigma_vdw, o.sigma_vdw_14, o.sigma_hbond, o.sigma_metal,
                                   o.incr_14, o.incr_hbond, o.incr_h_hbond, o.neighbour_buffer,
                                   symmetry)
            self.nonbonded = Nonbonded(model, self.tables, self.lib, params)

    def _terms(self, xyz, grad=None, curv=None) -> dict[str, tuple[float, np.ndarray]]:
        """{type: (value, normalised residuals)}; adds into grad/curv (N, 3) when given."""
        t, o = self.tables, self.options
        xyz = np.ascontiguousarray(xyz, dtype=np.float64)
        flags = (grad if grad is not None else _DUMMY, curv if curv is not None else _DUMMY,
                 grad is not None, curv is not None)
        res = {name: np.empty(n) for name, n in (
            ("bonds", len(t.bond_idx)), ("angles", len(t.angle_idx)),
            ("torsions", len(t.torsion_idx)), ("chirals", len(t.chiral_idx)),
            ("planes", len(t.plane_atoms)))}
        out = {
            "bonds": kernels.bonds_kernel(xyz, t.bond_idx, t.bond_ideal, t.bond_sigma, *flags,
                                          res["bonds"]),
            "angles": kernels.angles_kernel(xyz, t.angle_idx, t.angle_ideal, t.angle_sigma,
                                            *flags, res["angles"]),
            "chirals": kernels.chirals_kernel(xyz, t.chiral_idx, t.chiral_volume, t.chiral_both,
                                              o.sigma_chiral, *flags, res["chirals"]),
            "planes": kernels.planes_kernel(xyz, t.plane_atoms, t.plane_ptr, t.plane_sigma,
                                            *flags, res["planes"]),
        }
        if o.torsions:
            out["torsions"] = kernels.torsions_kernel(
                xyz, t.torsion_idx, t.torsion_ideal, t.torsion_sigma, t.torsion_period, *flags,
                res["torsions"])
        if self.nonbonded is not None and o.weight_nonbonded > 0:
            g = None if grad is None else np.zeros_like(grad)
            c = None if curv is None else np.zeros_like(curv)
            value = self.nonbonded.evaluate(xyz, g, c)
            for acc, part in ((grad, g), (curv, c)):
                if acc is not None:
                    acc += o.weight_nonbonded * part
            out["nonbonded"] = o.weight_nonbonded * value
        return {k: (v, res.get(k, np.zeros(0))) for k, v in out.items()}

    def evaluate(self, model: AtomModel, want_grad: bool = True,
                 want_curv: bool = False) -> TermResult:
        n = model.n_atoms
        grad = np.zeros((n, 3)) if want_grad else None
        curv = np.zeros((n, 3)) if want_curv else None
        parts = self._terms(model.xyz, grad, curv)
        value = sum(v for v, _ in parts.values())
        return TermResult(float(value),
                          AtomGradient(n, xyz=grad) if want_grad else None,
                          AtomGradient(n, xyz=curv) if want_curv else None)

    def per_type(self, model: AtomModel) -> dict[str, float]:
        """Value of each restraint type (same units as the target) for reporting/weighting."""
        return {k: v for k, (v, _) in self._terms(model.xyz).items()}

    def statistics(self, model: AtomModel) -> dict[str, float]:
        """r.m.s. deviations (Å, degrees, Å³; bonds and angles without H), r.m.s. Z per
        type (all restraints), counts and clashes."""
        t, xyz = self.tables, model.xyz
        parts = self._terms(xyz)
        stats: dict[str, float] = {}
        # r.m.s. deviations over restraints without H (as REFMAC/servalcat/MolProbity report)
        heavy_b = ~model.is_hydrogen[t.bond_idx].any(axis=1)
        heavy_a = ~model.is_hydrogen[t.angle_idx].any(axis=1)
        d = kernels.bond_distances(xyz, t.bond_idx)
        stats["rmsd_bonds"] = _rms((d - t.bond_ideal)[heavy_b])
        theta = kernels.angle_values(xyz, t.angle_idx)
        stats["rmsd_angles"] = math.degrees(_rms((theta - t.angle_ideal)[heavy_a]))
        if "torsions" in parts:
            phi = kernels.torsion_values(xyz, t.torsion_idx)
            delta = kernels.wrap_periodic(phi - t.torsion_ideal, t.torsion_period)
            stats["rmsd_torsions"] = math.degrees(_rms(delta))
        v = kernels.chiral_volumes(xyz, t.chiral_idx)
        target = np.where(t.chiral_both, np.copysign(np.abs(t.chiral_volume), v), t.chiral_volume)
        stats["rmsd_chiral"] = _rms(v - target)
        stats["rmsd_planes"] = _rms(parts["planes"][1] * t.plane_sigma)
        for name in ("bonds", "angles", "torsions", "chirals", "planes"):
            if name in parts:
                stats[f"rmsz_{name}"] = _rms(parts[name][1])
        stats["n_bonds"] = float(len(t.bond_idx))
        stats["n_angles"] = float(len(t.angle_idx))
        stats["n_torsions"] = float(len(t.torsion_idx)) if "torsions" in parts else 0.0
        stats["n_chirals"] = float(len(t.chiral_idx))
        stats["n_planes"] = float(t.n_planes)
        if self.nonbonded is not None:
            stats["clashes"] = float(self.nonbonded.clashes(xyz))
        return stats


def _kl_pairs(bi: np.ndarray, bj: np.ndarray, sigma: np.ndarray):
    """Σ w(B_i/B_j + B_j/B_i − 2), w = 3/(2σ²) (the symmetrised KL divergence of isotropic
    Gaussians over σ²); returns the value, and per pair ∂/∂B_i, ∂/∂B_j, ∂²/∂B_i², ∂²/∂B_j²."""
    w = 1.5 / sigma ** 2
    value = float(np.sum(w * (bi - bj) ** 2 / (bi * bj)))
    gi = w * (1.0 / bj - bj / bi ** 2)
    gj = w * (1.0 / bi - bi / bj ** 2)
    return value, gi, gj, 2.0 * w * bj / bi ** 3, 2.0 * w * bi / bj ** 3


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


# ------------------------------------------------------------------ ADP similarity
@dataclass
class AdpSimilarityOptions(LibraryOptions):
    """Form and σ of the B similarity of bonded (1-2) and angle-end (1-3) pairs.

    ``form``: "difference" — ((B_i − B_j)/σ)² with σ = ``sigma_bond`` /
    ``sigma_angle`` (Å²); "kl" — the symmetrised Kullback–Leibler divergence
    of the two atoms' isotropic Gaussians over σ², σ = ``kl_sigma_bond`` /
    ``kl_sigma_angle`` (dimensionless).  ``hydrogens``: false leaves out
    pairs with a hydrogen (riding H whose B follow their parent's: such pairs
    repeat the parent's own pairs, over-weighting the restraint).
    """

    form: Literal["difference", "kl"] = "difference"
    sigma_bond: float = 1.5
    sigma_angle: float = 2.0
    kl_sigma_bond: float = 0.1
    kl_sigma_angle: float = 0.15
    include_angles: bool = True
    hydrogens: bool = True

    def validate(self) -> None:
        super().validate()
        if min(self.sigma_bond, self.sigma_angle, self.kl_sigma_bond, self.kl_sigma_angle) <= 0:
            raise ValueError("sigma_bond, sigma_angle, kl_sigma_bond and kl_sigma_angle must be > 0")


class AdpSimilarity(Restraint):
    """Similarity of isotropic B between covalent neighbours.

    Pairs from the monomer-library topology: bonds (σ_bond) and 1-3 angle
    ends (σ_angle); REFMAC's B-value restraints (Murshudov et al., Acta
    Cryst. D67, 355 (2011), §2.4).  ``form = "difference"``:
    T = Σ ((B_i − B_j)/σ)².  ``form = "kl"``: T = Σ KL_ij/σ² with
    KL_ij = KL(N_i‖N_j) + KL(N_j‖N_i) = (3/2)(B_i − B_j)²/(B_i B_j) for
    isotropic Gaussians N = N(0, B/8π² I), the divergence REFMAC and
    servalcat restrain ADPs with: a relative difference, looser for atoms
    with large B (B below 1 Å² count as 1 Å²).  The diagonal curvature is exact in both forms.
    """

    name: ClassVar[str] = "adp-similarity"
    Options: ClassVar[type] = AdpSimilarityOptions

    def setup(self, context) -> None:
        key = (id(context.model.structure), context.model.n_atoms)
        if getattr(self, "_built_for", None) == key:
            return
        self._built_for = key
        _, tables = load_tables(context.model, self.options)
        pairs, sigma = self._pairs(tables)
        if not self.options.hydrogens:
            h = context.model.is_hydrogen
            keep = ~(h[pairs[:, 0]] | h[pairs[:, 1]])
            pairs, sigma = pairs[keep], sigma[keep]
        self.pairs, self.sigma = pairs, sigma

    def _pairs(self, t: RestraintTables) -> tuple[np.ndarray, np.ndarray]:
        o = self.options
        kl = o.form == "kl"
        sets = [(t.bond_idx, o.kl_sigma_bond if kl else o.sigma_bond)]
        if o.include_angles:
            sets.append((t.angle_idx[:, [0, 2]], o.kl_sigma_angle if kl else o.sigma_angle))
        pairs, sigma, seen = [], [], np.zeros(0, dtype=np.int64)
        n = t.n_atoms
        for idx, s in sets:
            key = np.unique(np.sort(idx, axis=1) @ np.array([n, 1]))
            key = key[~np.isin(key, seen)]
            seen = np.concatenate([seen, key])
            pairs.append(np.stack([key // n, key % n], axis=1))
            sigma.append(np.full(len(key), s))
        return np.concatenate(pairs), np.concatenate(sigma)

    def evaluate(self, model: AtomModel, want_grad: bool = True,
                 want_curv: bool = False) -> TermResult:
        b = model.b_iso
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        n = model.n_atoms
        if self.options.form == "kl":  # B below B_MIN_KL count as B_MIN_KL (the divergence needs B > 0)
            bi, bj = np.maximum(b[i], B_MIN_KL), np.maximum(b[j], B_MIN_KL)
            value, gi, gj, ci, cj = _kl_pairs(bi, bj, self.sigma)
            for g, c, raw in ((gi, ci, b[i]), (gj, cj, b[j])):
                g[raw < B_MIN_KL] = 0.0
                c[raw < B_MIN_KL] = 0.0
        else:
            r = (b[i] - b[j]) / self.sigma
            value = float(np.dot(r, r))
            gi = 2.0 * r / self.sigma
            gj = -gi
            ci = cj = 2.0 / self.sigma ** 2
        grad = curv = None
        if want_grad:
            grad = AtomGradient(n, b_iso=np.bincount(i, gi, n) + np.bincount(j, gj, n))
        if want_curv:
            curv = AtomGradient(n, b_iso=np.bincount(i, ci, n) + np.bincount(j, cj, n))
        return TermResult(value, grad, curv)

    def statistics(self, model: AtomModel) -> dict[str, float]:
        """r.m.s. ΔB (Å²) of restrained pairs and their count."""
        b = model.b_iso
        diff = b[self.pairs[:, 0]] - b[self.pairs[:, 1]]
        return {"rmsd_b_pairs": _rms(diff), "n_b_pairs": float(len(diff))}
