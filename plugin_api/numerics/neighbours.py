"""Symmetry-aware neighbour list with a Verlet buffer, rebuilt lazily.

Pairs (i, j, g) are reported when |x_i − g·x_j| < cutoff + buffer, where g runs
over the space-group operations combined with lattice translations (orthogonal
frame, Å).  The list stays valid (a superset of all pairs closer than
``cutoff``) until some atom has moved more than ``buffer / 2`` since the build:
each pair distance can then have shrunk by at most ``buffer`` (the Verlet
neighbour-list argument; Verlet, Phys. Rev. 159, 98 (1967)).

Conventions:

* transform 0 is the identity; pairs under it have i < j and appear once;
* pairs under any other transform (a symmetry mate or a lattice translation)
  appear in both orders, (i, j, g) and (j, i, g⁻¹), so a pair energy summed over
  them with weight ½ is the crystal energy per asymmetric unit;
* ``rot[k]`` (3×3) and ``trans[k]`` (3,) act on orthogonal coordinates:
  g·x = rot[k] @ x + trans[k].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import gemmi
import numpy as np
from scipy.spatial import cKDTree


@dataclass
class NeighbourPairs:
    """Candidate pairs of one build; ``op`` indexes ``rot``/``trans``."""

    i: np.ndarray
    j: np.ndarray
    op: np.ndarray
    rot: np.ndarray
    trans: np.ndarray
    build: int

    def partner_xyz(self, xyz: np.ndarray) -> np.ndarray:
        """Orthogonal coordinates (Å) of g·x_j for every pair."""
        xj = xyz[self.j]
        return np.einsum("pab,pb->pa", self.rot[self.op], xj) + self.trans[self.op]

    @property
    def is_symmetry(self) -> np.ndarray:
        """True for pairs under a non-identity transform."""
        return self.op != 0


class NeighbourList:
    """Neighbour pairs within ``cutoff`` Å, including crystal-symmetry mates.

    ``cell``/``spacegroup`` None (or ``symmetry=False``) gives pairs within
    the model only.  Call :meth:`pairs` with the current coordinates; it
    rebuilds only when an atom moved more than ``buffer / 2`` Å.
    """

    def __init__(self, cutoff: float, buffer: float = 1.0,
                 cell: gemmi.UnitCell | None = None,
                 spacegroup: gemmi.SpaceGroup | None = None,
                 symmetry: bool = True):
        if cutoff <= 0 or buffer < 0:
            raise ValueError("cutoff must be > 0 and buffer >= 0 (Å)")
        self.cutoff = float(cutoff)
        self.buffer = float(buffer)
        self.use_symmetry = bool(symmetry and cell is not None and cell.is_crystal())
        self.cell = cell
        self.spacegroup = spacegroup if spacegroup is not None else gemmi.SpaceGroup("P 1")
        self.n_builds = 0
        self._xyz_built: np.ndarray | None = None
        self._pairs: NeighbourPairs | None = None

    def needs_rebuild(self, xyz: np.ndarray) -> bool:
        """True when no list exists or some atom moved more than buffer/2."""
        if self._xyz_built is None or self._xyz_built.shape != xyz.shape:
            return True
        shift2 = np.einsum("ij,ij->i", xyz - self._xyz_built, xyz - self._xyz_built)
        return bool(shift2.max(initial=0.0) > (0.5 * self.buffer) ** 2)

    def pairs(self, xyz: np.ndarray) -> NeighbourPairs:
        """The current pair list (rebuilt first when needed)."""
        if self.needs_rebuild(xyz):
            self._build(np.asarray(xyz, dtype=np.float64))
        return self._pairs

    # ------------------------------------------------------------------ build
    def _transforms(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Space-group operations as (fractional rotation, fractional translation)."""
        rots, trans = [], []
        for op in self.spacegroup.operations():
            rots.append(np.array(op.rot, dtype=np.float64) / op.DEN)
            trans.append(np.array(op.tran, dtype=np.float64) / op.DEN)
        return rots, trans

    def _build(self, xyz: np.ndarray) -> None:
        reach = self.cutoff + self.buffer
        tree = cKDTree(xyz)
        intra = tree.query_pairs(reach, output_type="ndarray")
        if len(intra):
            intra = np.sort(intra, axis=1)
        i_list = [intra[:, 0].astype(np.int64)] if len(intra) else []
        j_list = [intra[:, 1].astype(np.int64)] if len(intra) else []
        op_list = [np.zeros(len(intra), dtype=np.int64)] if len(intra) else []
        rot_out = [np.eye(3)]
        trans_out = [np.zeros(3)]
        if self.use_symmetry:
            self._symmetry_pairs(xyz, tree, reach, i_list, j_list, op_list, rot_out, trans_out)
        cat = (lambda a: np.concatenate(a) if a else np.zeros(0, dtype=np.int64))
        self.n_builds += 1
        self._pairs = NeighbourPairs(cat(i_list), cat(j_list), cat(op_list),
                                     np.array(rot_out), np.array(trans_out), self.n_builds)
        self._xyz_built = xyz.copy()

    def _symmetry_pairs(self, xyz, tree, reach, i_list, j_list, op_list, rot_out, trans_out):
        """Pairs with every image g·x_j (g ≠ identity) that falls near the model."""
        orth = np.array(self.cell.orth.mat.tolist())
        frac = np.array(self.cell.frac.mat.tolist())
        f = xyz @ frac.T
        # fractional margin per axis: reach / (spacing of the (100), (010), (001) planes)
        margin = reach * np.linalg.norm(frac, axis=1)
        lo_box, hi_box = f.min(axis=0) - margin, f.max(axis=0) + margin
        images, atom, transform = [], [], []
        for rot_f, tr_f in zip(*self._transforms()):
            g = f @ rot_f.T + tr_f
            s_lo = np.floor(lo_box - g.max(axis=0)).astype(int)
            s_hi = np.ceil(hi_box - g.min(axis=0)).astype(int)
            is_identity = np.allclose(rot_f, np.eye(3)) and np.allclose(tr_f, 0.0)
            ranges = [range(s_lo[k], s_hi[k] + 1) for k in range(3)]
            for shift in itertools.product(*ranges):
                if is_identity and shift == (0, 0, 0):
                    continue
                gs = g + np.array(shift, dtype=np.float64)
                inside = np.flatnonzero(np.all((gs >= lo_box) & (gs <= hi_box), axis=1))
                if len(inside) == 0:
                    continue
                images.append(gs[inside] @ orth.T)
                atom.append(inside)
                transform.append(np.full(len(inside), len(rot_out), dtype=np.int64))
                rot_out.append(orth @ rot_f @ frac)
                trans_out.append(orth @ (tr_f + np.array(shift, dtype=np.float64)))
        if not images:
            return
        images_xyz = np.concatenate(images)
        atom_idx, op_idx = np.concatenate(atom), np.concatenate(transform)
        hits = tree.sparse_distance_matrix(cKDTree(images_xyz), reach, output_type="ndarray")
        i_list.append(hits["i"].astype(np.int64))
        j_list.append(atom_idx[hits["j"]])
        op_list.append(op_idx[hits["j"]])
