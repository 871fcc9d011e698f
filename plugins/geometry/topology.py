"""Restraint tables from gemmi's monomer-library topology, indexed like AtomModel.

gemmi (``prepare_topology``; Wojdyr, J. Open Source Softw. 7, 4200 (2022))
applies the CCP4 Monomer Library (Vagin et al., Acta Cryst. D60, 2184 (2004))
to a *clone* of the model: every atom of the clone gets ``serial = index + 1``
so each restraint maps back to rows of the AtomModel arrays, and the original
structure is never modified (no atoms added, removed or reordered).

Polymer links: gemmi decides a link between consecutive residues from a short
C–N (O3'–P) distance, which a perturbed start model can exceed.  A second pass
adds an explicit link for every "gap" between residues whose numbering is
continuous and whose linking atoms are closer than ``link_distance`` Å;
cis/trans follows the CISPEP records when the file has them, otherwise ω.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace

import gemmi
import numpy as np

from refinekit.plugin_api import AtomModel, InputError

log = logging.getLogger(__name__)

PEPTIDE_GROUPS = {gemmi.ChemComp.Group.Peptide, gemmi.ChemComp.Group.PPeptide,
                  gemmi.ChemComp.Group.MPeptide}
NUCLEIC_GROUPS = {gemmi.ChemComp.Group.Dna, gemmi.ChemComp.Group.Rna,
                  gemmi.ChemComp.Group.DnaRna}


@dataclass
class RestraintTables:
    """Index arrays (rows of AtomModel) and ideal values; angles in radians."""

    n_atoms: int
    bond_idx: np.ndarray
    bond_ideal: np.ndarray
    bond_sigma: np.ndarray
    angle_idx: np.ndarray
    angle_ideal: np.ndarray
    angle_sigma: np.ndarray
    torsion_idx: np.ndarray
    torsion_ideal: np.ndarray
    torsion_sigma: np.ndarray
    torsion_period: np.ndarray
    torsion_label: np.ndarray
    torsion_kind: np.ndarray
    chiral_idx: np.ndarray
    chiral_volume: np.ndarray
    chiral_both: np.ndarray
    plane_atoms: np.ndarray
    plane_id: np.ndarray
    plane_sigma: np.ndarray
    plane_ptr: np.ndarray
    n_planes: int
    chem_type: np.ndarray
    altloc: np.ndarray
    links: Counter = field(default_factory=Counter)
    warnings: str = ""


def build_tables(model: AtomModel, lib: gemmi.MonLib, cis_peptides: str = "auto",
                 link_distance: float = 4.0, nucleus_h: bool = False) -> RestraintTables:
    """Topology of ``model`` as index arrays (see module docstring).

    ``nucleus_h``: X–H bond targets at nuclear positions (neutron, cryo-EM
    models) instead of the electron-cloud centres (X-ray).  Links to a
    symmetry mate (LINK records with a symmetry operator) are not restrained
    as bonds; the non-bonded term sees those contacts instead.
    """
    st = _indexed_clone(model)
    _drop_symmetry_links(st)
    use_records = _use_cis_records(st, cis_peptides)
    topo, warnings = _prepare(st, lib, use_records)
    repairs = _link_repairs(st, lib, topo, use_records, link_distance)
    if repairs:
        for conn in repairs:
            st.connections.append(conn)
        topo, warnings = _prepare(st, lib, use_records)
    tables = _extract(topo, st, model.n_atoms, nucleus_h)
    tables.links = _count_links(topo)
    tables.warnings = warnings
    if warnings:
        log.warning("topology: %s", warnings)
    return tables


def select_torsions(tables: RestraintTables, include: list[str],
                    exclude: list[str]) -> RestraintTables:
    """Keep the torsions matching a ``GROUP:LABEL`` glob of ``include`` and none of ``exclude``.

    GROUP is the monomer-library group of the residue (``peptide``, ``P-peptide``,
    ``DNA``, ``pyranose``, ``non-polymer`` …) or ``link`` for a torsion across
    two residues; LABEL is the dictionary's torsion id (``chi1``, ``omega``,
    ``sp2_sp2_1`` …).  Matching is case-insensitive (fnmatch).
    """
    keys = [f"{k}:{lab}".lower() for k, lab in zip(tables.torsion_kind, tables.torsion_label)]

    def hits(rules):
        return np.array([any(fnmatch.fnmatchcase(key, r.lower()) for r in rules) for key in keys],
                        dtype=bool).reshape(len(keys))

    keep = hits(include) & ~hits(exclude)
    return replace(tables, **{name: getattr(tables, name)[keep] for name in (
        "torsion_idx", "torsion_ideal", "torsion_sigma", "torsion_period", "torsion_label",
        "torsion_kind")})


# ----------------------------------------------------------------- gemmi passes
def _indexed_clone(model: AtomModel) -> gemmi.Structure:
    st = model.structure.clone()
    while len(st) > 1:
        del st[1]
    for chain in st[0]:
        for res in chain:
            for atom in res:
                atom.serial = 0
    for i, (ci, ri, ai) in enumerate(model.atom_ref):
        st[0][int(ci)][int(ri)][int(ai)].serial = i + 1
    st.setup_entities()
    return st


def _drop_symmetry_links(st: gemmi.Structure) -> None:
    for k in reversed(range(len(st.connections))):
        if st.connections[k].asu == gemmi.Asu.Different:
            log.info("link %s to a symmetry mate is not restrained as a bond",
                     st.connections[k].name)
            del st.connections[k]


def _use_cis_records(st: gemmi.Structure, mode: str) -> bool:
    if mode == "records":
        return True
    if mode == "geometry":
        return False
    return bool(_cis_records(st))


def _cis_records(st: gemmi.Structure) -> set[tuple[str, int, str]]:
    """(chain, seqnum, name) of the first residue of every CISPEP record."""
    out = set()
    for line in st.make_pdb_headers().splitlines():
        if line.startswith("CISPEP"):
            out.add((line[15].strip(), int(line[17:21]), line[11:14].strip()))
    return out


def _prepare(st: gemmi.Structure, lib: gemmi.MonLib, use_records: bool):
    buf = io.StringIO()
    try:
        topo = gemmi.prepare_topology(st, lib, model_index=0, h_change=gemmi.HydrogenChange.NoChange,
                                      reorder=False, warnings=buf, use_cispeps=use_records)
    except RuntimeError as exc:
        raise InputError(f"gemmi could not build the restraint topology: {exc}") from exc
    return topo, buf.getvalue().strip()


def _link_repairs(st, lib, topo, use_records: bool, link_distance: float) -> list[gemmi.Connection]:
    """Explicit links for spurious polymer gaps (continuous numbering, atoms close)."""
    cis = _cis_records(st) if use_records else set()
    out, seen = [], set()
    for info in topo.chain_infos:
        if not info.polymer:
            continue
        chain = info.chain_ref.name
        for ri in info.res_infos:
            for link in ri.prev:
                if link.link_id != "gap":
                    continue
                r1, r2 = link.res1, link.res2
                key = (chain, str(r1.seqid), str(r2.seqid))
                if key in seen or r2.seqid.num - r1.seqid.num not in (0, 1):
                    continue
                seen.add(key)
                conn = _make_link(lib, chain, r1, r2, cis, use_records, link_distance)
                if conn is not None:
                    conn.name = f"rk_link{len(out) + 1}"
                    out.append(conn)
    return out


def _make_link(lib, chain, r1, r2, cis, use_records, link_distance):
    g1, g2 = lib.monomers[r1.name].group, lib.monomers[r2.name].group
    if g1 in PEPTIDE_GROUPS and g2 in PEPTIDE_GROUPS:
        names = ("C", "N")
        is_cis = ((chain[:1], r1.seqid.num, r1.name) in cis if use_records
                  else _omega_is_cis(r1, r2))
        prefix = {gemmi.ChemComp.Group.PPeptide: "P", gemmi.ChemComp.Group.MPeptide: "NM"}.get(g2, "")
        link_id = prefix + ("CIS" if is_cis else "TRANS")
    elif g1 in NUCLEIC_GROUPS and g2 in NUCLEIC_GROUPS:
        names, link_id = ("O3'", "P"), "p"
    else:
        return None
    a1, a2 = r1.find_atom(names[0], "*"), r2.find_atom(names[1], "*")
    if a1 is None or a2 is None or a1.pos.dist(a2.pos) > link_distance:
        return None
    conn = gemmi.Connection()
    conn.type = gemmi.ConnectionType.Covale
    conn.link_id = link_id
    conn.partner1 = gemmi.AtomAddress(chain, r1.seqid, r1.name, names[0], "\0")
    conn.partner2 = gemmi.AtomAddress(chain, r2.seqid, r2.name, names[1], "\0")
    return conn


def _omega_is_cis(r1: gemmi.Residue, r2: gemmi.Residue) -> bool:
    atoms = [r1.find_atom("CA", "*"), r1.find_atom("C", "*"), r2.find_atom("N", "*"),
             r2.find_atom("CA", "*")]
    if any(a is None for a in atoms):
        return False
    omega = gemmi.calculate_dihedral(*(a.pos for a in atoms))
    return abs(omega) < math.pi / 2


def _count_links(topo) -> Counter:
    """Links by id, one per residue pair (not per altloc); repaired gaps count as their link."""
    def pair(link):
        return (str(link.res1.seqid), link.res1.name, str(link.res2.seqid), link.res2.name)

    counts = Counter(link.link_id for link in topo.extras)
    bridged = {pair(link) for link in topo.extras}
    for info in topo.chain_infos:
        for ri in info.res_infos:
            for link_id in {link.link_id for link in ri.prev
                            if not (link.link_id == "gap" and pair(link) in bridged)}:
                counts[link_id] += 1
    return counts


# ----------------------------------------------------------------- extraction
def _index(atoms, n_atoms: int) -> list[int]:
    return [a.serial - 1 for a in atoms]


def _check_indices(idx: np.ndarray, n_atoms: int) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= n_atoms):
        raise InputError("a restraint refers to an atom outside the model (topology mapping failed)")
    return idx


def _bond_target(bond, nucleus_h: bool) -> tuple[float, float]:
    r = bond.restr
    if nucleus_h and any(a.is_hydrogen() for a in bond.atoms) and not math.isnan(r.value_nucleus):
        return r.value_nucleus, r.esd_nucleus if r.esd_nucleus > 0 else r.esd
    return r.value, r.esd


def _extract(topo, st: gemmi.Structure, n_atoms: int, nucleus_h: bool) -> RestraintTables:
    deg = math.pi / 180.0
    residue, group = _residue_groups(topo, n_atoms)
    bonds = [(_index(b.atoms, n_atoms), *_bond_target(b, nucleus_h)) for b in topo.bonds
             if b.restr.esd > 0]
    angles = [(_index(a.atoms, n_atoms), a.restr.value * deg, a.restr.esd * deg)
              for a in topo.angles if a.restr.esd > 0]
    torsions = [(_index(t.atoms, n_atoms), t.restr.value * deg, t.restr.esd * deg,
                 max(int(t.restr.period), 1), t.restr.label, _torsion_kind(t.atoms, residue, group))
                for t in topo.torsions
                if t.restr.esd > 0 and not t.restr.label.lower().startswith("free")]
    chirals = []
    for c in topo.chirs:
        volume = topo.ideal_chiral_abs_volume(c)
        if c.restr.sign == gemmi.ChiralityType.Negative:
            volume = -volume
        chirals.append((_index(c.atoms, n_atoms), volume,
                        c.restr.sign == gemmi.ChiralityType.Both))
    plane_atoms, plane_id, plane_sigma = [], [], []
    n_planes = 0
    for p in topo.planes:
        if len(p.atoms) < 4 or p.restr.esd <= 0:
            continue
        idx = _index(p.atoms, n_atoms)
        plane_atoms += idx
        plane_id += [n_planes] * len(idx)
        plane_sigma += [p.restr.esd] * len(idx)
        n_planes += 1
    return RestraintTables(
        n_atoms=n_atoms,
        bond_idx=_ints(bonds, 2, n_atoms), bond_ideal=_col(bonds, 1), bond_sigma=_col(bonds, 2),
        angle_idx=_ints(angles, 3, n_atoms), angle_ideal=_col(angles, 1), angle_sigma=_col(angles, 2),
        torsion_idx=_ints(torsions, 4, n_atoms), torsion_ideal=_col(torsions, 1),
        torsion_sigma=_col(torsions, 2),
        torsion_period=np.array([t[3] for t in torsions], dtype=np.int64),
        torsion_label=np.array([t[4] for t in torsions], dtype=object),
        torsion_kind=np.array([t[5] for t in torsions], dtype=object),
        chiral_idx=_ints(chirals, 4, n_atoms), chiral_volume=_col(chirals, 1),
        chiral_both=np.array([c[2] for c in chirals], dtype=bool),
        plane_atoms=_check_indices(np.array(plane_atoms, dtype=np.int64), n_atoms),
        plane_id=np.array(plane_id, dtype=np.int64),
        plane_sigma=np.array(plane_sigma, dtype=np.float64), n_planes=n_planes,
        plane_ptr=np.concatenate([[0], np.cumsum(np.bincount(plane_id, minlength=n_planes))]
                                 ).astype(np.int64),
        chem_type=_chem_types(topo, n_atoms),
        altloc=_altlocs(st, n_atoms),
    )


def _residue_groups(topo, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Per atom: a residue number (−1 unknown) and its monomer-library group name."""
    residue = np.full(n_atoms, -1, dtype=np.int64)
    group = np.full(n_atoms, "", dtype=object)
    k = 0
    for info in topo.chain_infos:
        for ri in info.res_infos:
            name = gemmi.ChemComp.group_str(ri.get_final_chemcomp("*").group)
            for atom in ri.res:
                if atom.serial > 0:
                    residue[atom.serial - 1] = k
                    group[atom.serial - 1] = name
            k += 1
    return residue, group


def _torsion_kind(atoms, residue: np.ndarray, group: np.ndarray) -> str:
    """'link' when the torsion's atoms lie in two residues, else the residue's group."""
    idx = [a.serial - 1 for a in atoms]
    return "link" if len({int(residue[i]) for i in idx}) > 1 else str(group[idx[1]])


def _ints(rows, width: int, n_atoms: int) -> np.ndarray:
    idx = np.array([r[0] for r in rows], dtype=np.int64).reshape(len(rows), width)
    return _check_indices(idx, n_atoms)


def _col(rows, k: int) -> np.ndarray:
    return np.array([r[k] for r in rows], dtype=np.float64)


def _chem_types(topo, n_atoms: int) -> np.ndarray:
    """Energy type (ener_lib) of every atom; the element symbol when unknown."""
    out = np.empty(n_atoms, dtype=object)
    for info in topo.chain_infos:
        for ri in info.res_infos:
            cc = ri.get_final_chemcomp("*")
            for atom in ri.res:
                i = atom.serial - 1
                if i < 0:
                    continue
                found = cc.find_atom(atom.name)
                out[i] = found.chem_type if found is not None else None
    return out


def _altlocs(st: gemmi.Structure, n_atoms: int) -> np.ndarray:
    out = np.full(n_atoms, "", dtype=object)
    for chain in st[0]:
        for res in chain:
            for atom in res:
                if atom.serial > 0 and atom.altloc != "\0":
                    out[atom.serial - 1] = atom.altloc
    return out
