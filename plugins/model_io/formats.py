"""Coordinate files: mmCIF and PDB via gemmi.

Reading keeps every atom of the first model (hydrogens, altlocs, waters);
the structure's entities are set up so the mmCIF output has the
_entity/_entity_poly categories a deposition needs.
"""

from __future__ import annotations

import gemmi

from refinekit.plugin_api import AtomModel, InputError, Reader, Writer
from refinekit.plugin_api.fileio import atomic_output

#: PDB format limits (atom serial field 5 digits, chain id 2 characters here).
PDB_MAX_ATOMS = 99999


class ModelReader(Reader):
    """Reads .cif/.mmcif/.pdb/.ent (optionally .gz) into an AtomModel."""

    name = "model"
    produces = "model"
    extensions = (".cif", ".mmcif", ".pdb", ".ent")

    def read(self, path: str, **hints) -> AtomModel:
        try:
            st = gemmi.read_structure(path, merge_chain_parts=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(f"not a readable coordinate file: {exc}", path) from None
        st.setup_entities()
        if len(st) == 0 or st[0].count_atom_sites() == 0:
            raise InputError("no atoms found (expected ATOM/HETATM records or _atom_site)", path)
        if len(st) > 1:
            for i in range(len(st) - 1, 0, -1):
                del st[i]
        st.remove_empty_chains()
        return AtomModel.from_structure(st, source=path)


class MmcifWriter(Writer):
    """Writes a gemmi.Structure as mmCIF (atomically)."""

    name = "mmcif"
    consumes = "model"
    extensions = (".cif", ".mmcif")

    def write(self, obj: gemmi.Structure, path: str) -> None:
        doc = obj.make_mmcif_document()
        with atomic_output(path) as tmp:
            doc.write_file(tmp)


class PdbWriter(Writer):
    """Writes a gemmi.Structure in PDB format when it fits (atoms, chain ids)."""

    name = "pdb"
    consumes = "model"
    extensions = (".pdb", ".ent")

    def write(self, obj: gemmi.Structure, path: str) -> None:
        n_atoms = obj[0].count_atom_sites()
        if n_atoms > PDB_MAX_ATOMS:
            raise InputError(f"{n_atoms} atoms do not fit the PDB format (max {PDB_MAX_ATOMS})", path)
        long_ids = [ch.name for ch in obj[0] if len(ch.name) > 2]
        if long_ids:
            raise InputError(f"chain ids {long_ids[:3]} are longer than the PDB format allows", path)
        with atomic_output(path) as tmp:
            obj.write_pdb(tmp)
