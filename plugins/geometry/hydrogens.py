"""Model preparer ``hydrogens``: (re)generate riding hydrogens from the monomer library.

Hydrogens contribute ~1/6 of a protein's electrons and fill the space that
non-bonded restraints and the bulk-solvent mask see; REFMAC and servalcat
add them at ideal positions before refining (Murshudov et al., Acta Cryst.
D67, 355 (2011), §2.3; Yamashita et al., Acta Cryst. D79, 368 (2023)).
gemmi's topology places them from the dictionary (``prepare_topology`` with
``HydrogenChange.ReAddButWater``; Wojdyr, J. Open Source Softw. 7, 4200
(2022)) at X–H distances of the electron cloud (X-ray) or the nucleus
(neutron, cryo-EM).  Each new H takes B and occupancy of its parent atom.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gemmi
import numpy as np

from refinekit.plugin_api import AtomModel, InputError, ModelPreparer, Step

from .library import read_library
from .term import LibraryOptions, nucleus_distances

_CHANGE = {"add": gemmi.HydrogenChange.ReAddButWater, "add-with-water": gemmi.HydrogenChange.ReAdd}


@dataclass
class HydrogenOptions(LibraryOptions):
    """``mode``: "add" (replace any H by ideal ones, waters without H), "add-with-water",
    "keep" (use the file's H as they are), "remove" (refine without H), or "auto":
    "keep" for a neutron model that has H or D (their positions and the H/D
    labels are data), "add" otherwise."""

    mode: Literal["auto", "add", "add-with-water", "keep", "remove"] = "auto"


class Hydrogens(ModelPreparer):
    """Adds, keeps or removes hydrogens before refinement (see module docstring)."""

    name: ClassVar[str] = "hydrogens"
    Options: ClassVar[type] = HydrogenOptions

    def prepare(self, model: AtomModel) -> tuple[AtomModel, dict[str, Any]]:
        mode = self.options.mode
        before = int(model.is_hydrogen.sum())
        if mode == "auto":
            mode = "keep" if model.radiation == "neutron" and before > 0 else "add"
        if mode == "keep":
            return model, {"mode": mode, "hydrogens": before}
        st = model.to_structure()
        while len(st) > 1:
            del st[1]
        st.remove_hydrogens()
        if mode == "add" or mode == "add-with-water":
            self._add(st, model, mode)
        out = AtomModel.from_structure(st, model.source)
        return out, {"mode": mode, "hydrogens_before": before,
                     "hydrogens": int(out.is_hydrogen.sum()), "atoms": out.n_atoms}

    def _add(self, st: gemmi.Structure, model: AtomModel, mode: str) -> None:
        add_hydrogens(st, self.options, _CHANGE[mode],
                      nucleus_distances(self.options, model))


def add_hydrogens(st: gemmi.Structure, options: LibraryOptions,
                  change: gemmi.HydrogenChange, nucleus: bool) -> None:
    """Add H to ``st`` (which has none) at ideal positions; B/occupancy from the parent."""
    lib = read_library(st, options.monlib, list(options.ligands))
    st.setup_entities()
    try:
        topo = gemmi.prepare_topology(st, lib, model_index=0, h_change=change,
                                      reorder=False, warnings=io.StringIO())
    except RuntimeError as exc:
        raise InputError(f"could not add hydrogens: {exc}") from exc
    of = (gemmi.Restraints.DistanceOf.Nucleus if nucleus
          else gemmi.Restraints.DistanceOf.ElectronCloud)
    topo.adjust_hydrogen_distances(of)
    _inherit_parent_adp(topo)
    _split_conformer_occupancy(st)


def _inherit_parent_adp(topo) -> None:
    """Give every H the B and occupancy of the atom it is bonded to."""
    for bond in topo.bonds:
        a, b = bond.atoms
        h, parent = (a, b) if a.is_hydrogen() else (b, a) if b.is_hydrogen() else (None, None)
        if h is not None and not parent.is_hydrogen():
            h.b_iso = parent.b_iso
            h.occ = parent.occ
            h.aniso = gemmi.SMat33f(0, 0, 0, 0, 0, 0)


def _split_conformer_occupancy(st: gemmi.Structure) -> None:
    """An H in conformer X on a parent without altloc (e.g. the amide H after a residue
    with alternative conformations) gets the occupancy of conformer X in its own or a
    neighbouring residue, so the conformers' copies of that H add up to one atom."""
    for chain in st[0]:
        for i, res in enumerate(chain):
            parents_alt = {a.name for a in res if not a.is_hydrogen() and a.altloc != "\0"}
            for atom in res:
                if not atom.is_hydrogen() or atom.altloc == "\0" or parents_alt:
                    continue
                occ = _conformer_occupancy(chain, i, atom.altloc)
                if occ is not None:
                    atom.occ = min(atom.occ, occ)


def _conformer_occupancy(chain: gemmi.Chain, i: int, altloc: str) -> float | None:
    for k in (i, i - 1, i + 1):
        if 0 <= k < len(chain):
            for atom in chain[k]:
                if atom.altloc == altloc and not atom.is_hydrogen():
                    return atom.occ
    return None


@dataclass
class PlaceOptions(LibraryOptions):
    """``with_water``: the model's waters carry H too (it was prepared with "add-with-water")."""

    with_water: bool = False


class PlaceHydrogens(Step):
    """Step ``place-hydrogens``: move every H back to its ideal position on the current
    heavy atoms (REFMAC's riding-H regeneration between cycles).

    H positions are refined parameters held by restraints; from a poor start
    (e.g. 0.5 Å rms shifts) their restraints would otherwise strain the heavy
    atoms.  B and occupancy of H are left as they are.  Figures: ``h_moved_rms`` (Å).
    """

    name: ClassVar[str] = "place-hydrogens"
    Options: ClassVar[type] = PlaceOptions

    def run(self, context) -> dict[str, Any]:
        model = context.model
        is_h = model.is_hydrogen
        if not is_h.any():
            return {}
        st = model.to_structure()
        while len(st) > 1:
            del st[1]
        st.remove_hydrogens()
        change = (gemmi.HydrogenChange.ReAdd if self.options.with_water
                  else gemmi.HydrogenChange.ReAddButWater)
        add_hydrogens(st, self.options, change, nucleus_distances(self.options, model, context))
        ideal = _positions_by_name(st)
        rows = np.flatnonzero(is_h)
        cache = (id(model.structure), model.n_atoms)  # the same atoms: the same names
        if getattr(self, "_keys_for", None) != cache:
            self._keys, self._keys_for = _keys(model, rows), cache
        keys = self._keys
        new = np.array([ideal.get(k, model.xyz[i]) for k, i in zip(keys, rows)])
        shift = float(np.sqrt(np.mean(np.sum((new - model.xyz[rows]) ** 2, axis=1))))
        model.xyz[rows] = new
        model.mark_changed()
        return {"h_moved_rms": shift}


def _keys(model: AtomModel, rows: np.ndarray) -> list[tuple]:
    st = model.structure[0]
    out = []
    for i in rows:
        ci, ri, ai = (int(v) for v in model.atom_ref[i])
        chain, res = st[ci], st[ci][ri]
        out.append((chain.name, str(res.seqid), res.name, res[ai].name, res[ai].altloc))
    return out


def _positions_by_name(st: gemmi.Structure) -> dict[tuple, list[float]]:
    return {(ch.name, str(res.seqid), res.name, a.name, a.altloc): a.pos.tolist()
            for ch in st[0] for res in ch for a in res if a.is_hydrogen()}
