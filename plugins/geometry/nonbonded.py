"""Non-bonded repulsion with crystal-symmetry contacts (REFMAC-style VDWR).

For each pair closer than its minimum distance d0 the target gains
w·((d − d0)/σ)² (zero beyond d0, so value and gradient are continuous).
d0 is the sum of the energy-type radii of ``ener_lib.cif`` (Vagin et al.,
Acta Cryst. D60, 2184 (2004)): ``vdwh_radius`` (radius with riding H) when the
model has no hydrogens, ``vdw_radius`` when it has; with REFMAC's special
cases (Murshudov et al., Acta Cryst. D67, 355 (2011)):

* 1-2 and 1-3 pairs (through bonds) are excluded; 1-4 pairs use the plain
  vdW radii + ``incr_14`` and ``sigma_14``;
* donor–acceptor pairs: + ``incr_hbond``, σ = ``sigma_hbond``; a polar H
  (bonded to a donor) and an acceptor: d0 = r(acceptor) + ``incr_h_hbond``;
* metal–non-metal pairs: sum of the ionic radii, σ = ``sigma_metal`` (no
  restraint when a radius is missing);
* water O is donor and acceptor;
* atoms in different alternative conformations never interact.

Pairs with a symmetry mate carry weight ½ (both orders are listed; see
:mod:`refinekit.plugin_api.numerics.neighbours`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np
import scipy.sparse as sp

from refinekit.plugin_api import AtomModel
from refinekit.plugin_api.numerics.neighbours import NeighbourList

from . import kernels
from .topology import RestraintTables


@dataclass
class VdwParameters:
    """Sigmas (Å) and distance increments (Å) of the repulsion."""

    sigma: float = 0.3
    sigma_14: float = 0.5
    sigma_hbond: float = 0.5
    sigma_metal: float = 0.5
    incr_14: float = -0.75
    incr_hbond: float = -0.2
    incr_h_hbond: float = 0.2
    buffer: float = 1.0
    symmetry: bool = True


@dataclass
class _Active:
    """Pairs kept after a neighbour-list build, with their d0, σ and weight."""

    i: np.ndarray
    j: np.ndarray
    op: np.ndarray
    rot: np.ndarray
    trans: np.ndarray
    d0: np.ndarray
    sigma: np.ndarray
    weight: np.ndarray
    build: int


def _lookup(matrix: sp.csr_matrix, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """matrix[i, j] != 0 for index arrays (vectorised)."""
    if len(i) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(matrix[i, j]).ravel() != 0


def _water_atoms(model: AtomModel) -> np.ndarray:
    """Atoms of water residues (their O is donor and acceptor whatever its type)."""
    st_model = model.structure[0]
    return np.array([st_model[int(c)][int(r)].is_water() for c, r, _ in model.atom_ref], dtype=bool)


class Nonbonded:
    """Repulsive non-bonded restraint over a lazily rebuilt neighbour list."""

    def __init__(self, model: AtomModel, tables: RestraintTables, lib: gemmi.MonLib,
                 params: VdwParameters):
        self.params = params
        n = model.n_atoms
        self._atom_parameters(model, tables, lib)
        adj = sp.coo_matrix((np.ones(len(tables.bond_idx)), tuple(tables.bond_idx.T)),
                            shape=(n, n)).tocsr()
        adj = ((adj + adj.T) > 0).astype(np.int8)
        self._polar_h = self._polar_hydrogens(adj)
        a2 = ((adj @ adj) > 0).astype(np.int8)
        self._excluded = ((adj + a2) > 0).tocsr()  # 1-2 and 1-3 (and self) pairs
        self._one_four = ((a2 @ adj) > 0).tocsr()
        self.altloc = tables.altloc
        self.cutoff = 2.0 * float(np.nanmax(self.radius)) + max(params.incr_hbond, 0.0, params.incr_14)
        self.neighbours = NeighbourList(self.cutoff, params.buffer, model.cell,
                                        model.spacegroup, params.symmetry)
        self._active: _Active | None = None

    # -------------------------------------------------------------- parameters
    def _atom_parameters(self, model, tables, lib) -> None:
        has_h = bool(model.is_hydrogen.any())
        atoms = lib.ener_lib.atoms
        n = model.n_atoms
        self.radius = np.empty(n)
        self.radius_14 = np.empty(n)
        self.ion_radius = np.full(n, np.nan)
        self.donor = np.zeros(n, dtype=bool)
        self.acceptor = np.zeros(n, dtype=bool)
        self.metal = np.zeros(n, dtype=bool)
        self.hydrogen = model.is_hydrogen.copy()
        water = _water_atoms(model)
        for i, (ctype, elem) in enumerate(zip(tables.chem_type, model.element)):
            element = gemmi.Element(elem)
            self.metal[i] = element.is_metal
            entry = atoms.get(ctype) if ctype else None
            if entry is None:
                self.radius[i] = self.radius_14[i] = element.vdw_r
                continue
            vdw = entry.vdw_radius
            self.radius_14[i] = vdw
            self.radius[i] = vdw if has_h or np.isnan(entry.vdwh_radius) else entry.vdwh_radius
            self.ion_radius[i] = entry.ion_radius
            self.donor[i] = entry.hb_type in ("D", "B") or (water[i] and not self.hydrogen[i])
            self.acceptor[i] = entry.hb_type in ("A", "B") or (water[i] and not self.hydrogen[i])

    def _polar_hydrogens(self, adj: sp.csr_matrix) -> np.ndarray:
        polar = np.zeros(len(self.radius), dtype=bool)
        for h in np.flatnonzero(self.hydrogen):
            partners = adj.indices[adj.indptr[h]:adj.indptr[h + 1]]
            polar[h] = bool(self.donor[partners].any())
        return polar

    # -------------------------------------------------------------- pair list
    def _pair_parameters(self, i, j, op):
        p = self.params
        same = op == 0
        excl = same & _lookup(self._excluded, i, j)
        alt_i, alt_j = self.altloc[i], self.altloc[j]
        excl |= same & (alt_i != "") & (alt_j != "") & (alt_i != alt_j)
        is14 = same & _lookup(self._one_four, i, j) & ~excl
        d0 = self.radius[i] + self.radius[j]
        sigma = np.full(len(i), p.sigma)
        hb = (self.donor[i] & self.acceptor[j]) | (self.acceptor[i] & self.donor[j])
        hh_ij = self._polar_h[i] & self.acceptor[j]
        hh_ji = self._polar_h[j] & self.acceptor[i]
        d0 = np.where(hb, d0 + p.incr_hbond, d0)
        d0 = np.where(hh_ij, self.radius[j] + p.incr_h_hbond, d0)
        d0 = np.where(hh_ji, self.radius[i] + p.incr_h_hbond, d0)
        sigma = np.where(hb | hh_ij | hh_ji, p.sigma_hbond, sigma)
        metal = self.metal[i] ^ self.metal[j]
        ion = self.ion_radius[i] + self.ion_radius[j]
        d0 = np.where(metal, ion, d0)  # NaN (no ionic radius) drops the pair
        sigma = np.where(metal, p.sigma_metal, sigma)
        d0 = np.where(is14, self.radius_14[i] + self.radius_14[j] + p.incr_14, d0)
        sigma = np.where(is14, p.sigma_14, sigma)
        # an atom on a special position meets its own image at ~0 Å: no restraint
        keep = ~excl & ~np.isnan(d0) & ~((i == j) & ~same)
        return keep, d0, sigma

    def active(self, xyz: np.ndarray) -> _Active:
        """Pairs within d0 + buffer at the last build (refreshed with the list)."""
        pairs = self.neighbours.pairs(xyz)
        if self._active is not None and self._active.build == pairs.build:
            return self._active
        keep, d0, sigma = self._pair_parameters(pairs.i, pairs.j, pairs.op)
        d = np.linalg.norm(xyz[pairs.i] - pairs.partner_xyz(xyz), axis=1)
        keep &= d < d0 + self.params.buffer
        op = pairs.op[keep]
        self._active = _Active(pairs.i[keep], pairs.j[keep], op, pairs.rot, pairs.trans,
                               d0[keep], sigma[keep], np.where(op == 0, 1.0, 0.5), pairs.build)
        return self._active

    # -------------------------------------------------------------- evaluation
    def distances(self, xyz: np.ndarray) -> tuple[_Active, np.ndarray]:
        """(active pairs, their distances |x_i − g·x_j| in Å)."""
        act = self.active(xyz)
        partner = np.einsum("pab,pb->pa", act.rot[act.op], xyz[act.j]) + act.trans[act.op]
        return act, np.linalg.norm(xyz[act.i] - partner, axis=1)

    def evaluate(self, xyz: np.ndarray, grad=None, curv=None) -> float:
        """Σ w ((d − d0)/σ)² over pairs with d < d0; adds into grad/curv (N, 3) when given."""
        act = self.active(xyz)
        dummy = np.zeros((1, 3))
        return float(kernels.repulsion_kernel(
            xyz, act.i, act.j, act.op, act.rot, act.trans, act.d0, act.sigma, act.weight,
            grad if grad is not None else dummy, curv if curv is not None else dummy,
            grad is not None, curv is not None))

    def clashes(self, xyz: np.ndarray, overlap: float = 0.4) -> int:
        """Number of contacts closer than d0 − ``overlap`` Å (symmetry contacts once)."""
        act, d = self.distances(xyz)
        return int(round(np.sum(act.weight[d < act.d0 - overlap])))
