"""Data containers of the contract: the atomic model, reflections and maps.

They are plain numpy arrays over gemmi objects, so a term written against
them needs no knowledge of file formats.  Conventions (used everywhere):

* coordinates ``xyz`` are orthogonal Cartesian, Å, in gemmi's orthogonalisation;
* ``b_iso`` is the isotropic displacement parameter B = 8π²<u²>, Å²;
* ``u_aniso`` is U (Å²) ordered U11 U22 U33 U12 U13 U23 in the orthogonal frame;
* ``occ`` is the occupancy in [0, 1].
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import gemmi
import numpy as np

from .errors import InputError


#: _exptl.method of a model file → radiation of a scattering table
METHOD_RADIATION = {"X-RAY DIFFRACTION": "xray", "NEUTRON DIFFRACTION": "neutron",
                    "ELECTRON CRYSTALLOGRAPHY": "electron", "ELECTRON MICROSCOPY": "electron",
                    "FIBER DIFFRACTION": "xray", "POWDER DIFFRACTION": "xray"}


@dataclass
class AtomModel:
    """The refinable atomic model: flat arrays over model 1 of a gemmi Structure.

    ``structure`` is kept for topology and output; the arrays are the truth
    while refining and are written back by :meth:`to_structure`.  Every
    parameterization that writes the arrays calls :meth:`mark_changed` so
    caches (masks, neighbour lists) know the atoms moved.
    """

    structure: gemmi.Structure
    xyz: np.ndarray
    b_iso: np.ndarray
    occ: np.ndarray
    u_aniso: np.ndarray
    has_aniso: np.ndarray
    element: np.ndarray
    charge: np.ndarray
    atom_ref: np.ndarray
    version: int = 0
    source: str = ""

    @classmethod
    def from_structure(cls, st: gemmi.Structure, source: str = "") -> "AtomModel":
        """Flatten the first model of ``st`` (all chains, residues, altlocs)."""
        if len(st) == 0:
            raise InputError("the structure has no model", source or None)
        refs, xyz, b, occ, u, has_u, elem, charge = [], [], [], [], [], [], [], []
        for ci, chain in enumerate(st[0]):
            for ri, res in enumerate(chain):
                for ai, atom in enumerate(res):
                    refs.append((ci, ri, ai))
                    xyz.append(atom.pos.tolist())
                    b.append(atom.b_iso)
                    occ.append(atom.occ)
                    a = atom.aniso
                    u.append([a.u11, a.u22, a.u33, a.u12, a.u13, a.u23])
                    has_u.append(a.nonzero())
                    elem.append(atom.element.name)
                    charge.append(atom.charge)
        if not refs:
            raise InputError("the model has no atoms", source or None)
        return cls(
            structure=st,
            xyz=np.array(xyz, dtype=np.float64),
            b_iso=np.array(b, dtype=np.float64),
            occ=np.array(occ, dtype=np.float64),
            u_aniso=np.array(u, dtype=np.float64),
            has_aniso=np.array(has_u, dtype=bool),
            element=np.array(elem, dtype=object),
            charge=np.array(charge, dtype=np.int32),
            atom_ref=np.array(refs, dtype=np.int64),
            source=source,
        )

    @property
    def n_atoms(self) -> int:
        """Number of atoms (rows of every array)."""
        return len(self.xyz)

    @property
    def cell(self) -> gemmi.UnitCell:
        """Unit cell of the model (Å, degrees)."""
        return self.structure.cell

    @property
    def spacegroup(self) -> gemmi.SpaceGroup:
        """Space group of the model (P 1 when the file names none)."""
        sg = self.structure.find_spacegroup()
        return sg if sg is not None else gemmi.SpaceGroup("P 1")

    @property
    def experiment_method(self) -> str:
        """The file's experiment method (_exptl.method / EXPDTA), upper case; '' when absent."""
        return str(dict(self.structure.info).get("_exptl.method", "")).strip("'\" ").upper()

    @property
    def radiation(self) -> str | None:
        """'xray', 'neutron' or 'electron' from :attr:`experiment_method`; None when unknown."""
        return METHOD_RADIATION.get(self.experiment_method)

    @property
    def is_hydrogen(self) -> np.ndarray:
        """Boolean mask of H and D atoms."""
        return np.isin(self.element, ["H", "D"])

    def mark_changed(self) -> None:
        """Record that atomic arrays changed (invalidates version-keyed caches)."""
        self.version += 1

    def copy(self) -> "AtomModel":
        """A deep copy whose arrays and structure are independent of this one."""
        return replace(
            self,
            structure=self.structure.clone(),
            **{k: getattr(self, k).copy() for k in
               ("xyz", "b_iso", "occ", "u_aniso", "has_aniso", "element", "charge", "atom_ref")},
        )

    def atoms(self):
        """Yield the gemmi Atom objects in array order (for reading, not writing)."""
        model = self.structure[0]
        for ci, ri, ai in self.atom_ref:
            yield model[int(ci)][int(ri)][int(ai)]

    def label(self, i: int) -> str:
        """Human-readable atom label, e.g. ``A/LYS 12/CA``."""
        ci, ri, ai = (int(v) for v in self.atom_ref[i])
        chain = self.structure[0][ci]
        res = chain[ri]
        atom = res[ai]
        alt = f".{atom.altloc}" if atom.altloc != "\0" else ""
        return f"{chain.name}/{res.name} {res.seqid.num}{res.seqid.icode.strip()}/{atom.name}{alt}"

    def select(self, expr: str | None) -> np.ndarray:
        """Indices of atoms matching a gemmi selection (``None``/'' = all).

        Syntax: gemmi's CID, e.g. ``/1/A/10-20/CA`` or ``(A)``; see the
        gemmi documentation "Selections".
        """
        if not expr:
            return np.arange(self.n_atoms)
        try:
            sel = gemmi.Selection(expr)
        except Exception as exc:  # gemmi raises RuntimeError with its own text
            raise InputError(f"invalid atom selection {expr!r}: {exc}") from exc
        tagged = self.structure.clone()
        model = tagged[0]
        for i, (ci, ri, ai) in enumerate(self.atom_ref):
            model[int(ci)][int(ri)][int(ai)].serial = i
        chosen = sel.copy_structure_selection(tagged)
        if len(chosen) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.array([a.serial for ch in chosen[0] for r in ch for a in r],
                                dtype=np.int64))

    def to_structure(self) -> gemmi.Structure:
        """A new gemmi Structure carrying the current arrays."""
        st = self.structure.clone()
        xyz, b, occ = self.xyz.tolist(), self.b_iso.tolist(), self.occ.tolist()
        aniso, u = self.has_aniso.tolist(), self.u_aniso.tolist()
        for i, atom in enumerate(self._atoms_in_order(st[0])):
            atom.pos = gemmi.Position(*xyz[i])
            atom.b_iso = b[i]
            atom.occ = occ[i]
            if aniso[i]:
                atom.aniso = gemmi.SMat33f(*u[i])
        return st

    def _atoms_in_order(self, model: gemmi.Model):
        """The atoms of ``model`` (a copy of this structure's first model) in array order.

        When ``atom_ref`` lists every atom in file order (as ``from_structure``
        makes it) they are walked sequentially, else looked up one by one.
        """
        ref = self.atom_ref
        in_file_order = (len(ref) == model.count_atom_sites()
                         and (len(ref) < 2 or np.all(np.diff(ref[:, 0] * 2**42 + ref[:, 1] * 2**21
                                                             + ref[:, 2]) > 0)))
        if in_file_order:
            return (atom for chain in model for res in chain for atom in res)
        return (model[int(ci)][int(ri)][int(ai)] for ci, ri, ai in ref)


@dataclass
class ReflectionData:
    """Unique reflections with observations.

    ``free`` is True for the test (R-free) set.  Missing values are NaN.
    Amplitudes and σ in the file's units; ``d`` (Å) is filled on creation.
    ``index`` maps rows of a subset back to rows of the full data set the
    kernel holds (so per-reflection scales can be looked up).
    """

    hkl: np.ndarray
    cell: gemmi.UnitCell
    spacegroup: gemmi.SpaceGroup
    f_obs: np.ndarray | None = None
    sigma_f: np.ndarray | None = None
    i_obs: np.ndarray | None = None
    sigma_i: np.ndarray | None = None
    free: np.ndarray | None = None
    source: str = ""
    columns: dict = field(default_factory=dict)
    index: np.ndarray | None = None
    d: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.hkl = np.asarray(self.hkl, dtype=np.int32)
        if self.free is None:
            self.free = np.zeros(len(self.hkl), dtype=bool)
        if self.index is None:
            self.index = np.arange(len(self.hkl))
        self.d = d_spacings(self.cell, self.hkl)

    def __len__(self) -> int:
        return len(self.hkl)

    def subset(self, mask: np.ndarray) -> "ReflectionData":
        """A new object restricted to ``mask`` (bool or index array)."""
        out = copy.copy(self)
        for name in ("hkl", "f_obs", "sigma_f", "i_obs", "sigma_i", "free", "d", "index"):
            value = getattr(self, name)
            if value is not None:
                setattr(out, name, value[mask])
        return out

    def resolution(self) -> tuple[float, float]:
        """(d_max, d_min) in Å."""
        return float(self.d.max()), float(self.d.min())


@dataclass
class ReflectionColumns:
    """Reflection columns to write (e.g. FC/PHIC, FWT/PHWT) for a Writer.

    ``columns`` is a list of (label, MTZ column type, array): types as in
    the MTZ format (F amplitude, P phase in degrees, Q σ, W weight, I int).
    """

    hkl: np.ndarray
    cell: gemmi.UnitCell
    spacegroup: gemmi.SpaceGroup
    columns: list


@dataclass
class MapData:
    """A density map on a grid covering (part of) a unit cell.

    ``values[i, j, k]`` is the density at fractional coordinates
    ((origin + (i, j, k)) / grid_shape) of ``cell``; for a boxed cryo-EM map
    ``grid_shape`` equals ``values.shape`` and the cell is the box (P 1).
    ``resolution`` is in Å (None until the user gives it).
    """

    values: np.ndarray
    cell: gemmi.UnitCell
    spacegroup: gemmi.SpaceGroup
    grid_shape: tuple[int, int, int]
    origin: tuple[int, int, int] = (0, 0, 0)
    resolution: float | None = None
    source: str = ""


def d_spacings(cell: gemmi.UnitCell, hkl: np.ndarray) -> np.ndarray:
    """Resolution d (Å) of each Miller index for ``cell``."""
    frac = cell.frac.mat.array  # rows map orthogonal -> fractional
    recip = frac.T  # columns are a*, b*, c*
    s = np.asarray(hkl, dtype=np.float64) @ recip.T
    s2 = np.einsum("ij,ij->i", s, s)
    with np.errstate(divide="ignore"):
        return np.where(s2 > 0, 1.0 / np.sqrt(np.maximum(s2, 1e-300)), np.inf)
