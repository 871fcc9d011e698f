"""Locating and reading the restraint dictionary (CCP4 Monomer Library layout).

Search order for the library directory: the option ``monlib``, then the
environment variables ``REFINEKIT_MONLIB`` and ``CLIBD_MON`` (a CCP4
``monomers`` directory), then the small subset shipped in ``monlib/`` next to
this module (see its README: LGPL-2.1 with the CCP4 Annex 2 clause).
"""

from __future__ import annotations

import os
from pathlib import Path

import gemmi

from refinekit.plugin_api import InputError

EMBEDDED = Path(__file__).resolve().parent / "monlib"


def library_dir(option: str | None) -> Path:
    """The monomer-library directory to use (checked to exist)."""
    for source, value in (("option monlib", option),
                          ("REFINEKIT_MONLIB", os.environ.get("REFINEKIT_MONLIB")),
                          ("CLIBD_MON", os.environ.get("CLIBD_MON"))):
        if value:
            path = Path(value).expanduser()
            if not (path / "list" / "mon_lib_list.cif").is_file():
                raise InputError(f"not a monomer library (no list/mon_lib_list.cif), given by {source}",
                                 str(path))
            return path
    return EMBEDDED


def residue_names(st: gemmi.Structure) -> list[str]:
    """Sorted residue names of model 1."""
    return sorted({res.name for chain in st[0] for res in chain})


def read_library(st: gemmi.Structure, monlib: str | None, ligands: list[str]) -> gemmi.MonLib:
    """Read the dictionaries for every residue of ``st``; InputError on a missing one."""
    path = library_dir(monlib)
    names = residue_names(st)
    lib = gemmi.read_monomer_lib(str(path), names, ignore_missing=True)
    for ligand in ligands:
        if not Path(ligand).is_file():
            raise InputError("ligand dictionary not found", ligand)
        try:
            lib.read_monomer_cif(str(ligand))
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"cannot read the ligand dictionary: {exc}", ligand) from exc
    missing = [n for n in names if n not in lib.monomers]
    if missing:
        raise InputError(_missing_message(st, missing, path))
    return lib


def _missing_message(st: gemmi.Structure, missing: list[str], path: Path) -> str:
    where = []
    for name in missing:
        for chain in st[0]:
            res = next((r for r in chain if r.name == name), None)
            if res is not None:
                where.append(f"{name} (chain {chain.name}, residue {res.seqid.num}"
                             f"{res.seqid.icode.strip()})")
                break
    return (f"no restraint dictionary for residue {', '.join(where)} in the monomer library "
            f"{path}; supply one with --ligand FILE.cif (option ligands = [\"FILE.cif\"]) "
            f"or point the option monlib / CLIBD_MON at a library that has it")
