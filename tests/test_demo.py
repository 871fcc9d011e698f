"""`refinekit demo`: the embedded example refines, fast, with the documented outputs."""

from __future__ import annotations

import json
import time

import gemmi

from refinekit.cli import main

#: per-cycle keys stats.json promises (issue 2 CLI contract, issue 3 outputs)
CYCLE_KEYS = {"cycle", "r_work", "r_free", "seconds", "rmsd_bonds", "rmsd_angles", "weight",
              "k_sol", "b_sol"}


def test_demo_refines_embedded_example_quickly(tmp_path):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "-o", str(out)]) == 0
    seconds = time.perf_counter() - t0
    assert seconds < 60.0, f"demo took {seconds:.1f} s"
    stats = json.loads((out / "stats.json").read_text())
    start, last = stats["cycles"][0], stats["cycles"][-1]
    xyz_cycles = [c for c in stats["cycles"] if "rmsd_bonds" in c and c["stage"] != "start"]
    assert xyz_cycles and CYCLE_KEYS <= set(xyz_cycles[-1])
    # the example is a displaced copy of 5E5Z: R must fall a long way, geometry stay sane
    assert last["r_free"] < start["r_free"] - 0.05 and last["r_work"] < start["r_work"] - 0.05
    assert last["rmsd_bonds"] < 0.02 and last["rmsd_angles"] < 2.5
    assert stats["final"]["scattering_table"] == "xray"
    st = gemmi.read_structure(str(out / "refined.cif"))
    st_h = st.clone()
    st.remove_hydrogens()
    assert st[0].count_atom_sites() == 47 and st_h[0].count_atom_sites() > 80  # riding H added
    mtz = gemmi.read_mtz_file(str(out / "refined.mtz"))
    assert {"FWT", "PHWT", "DELFWT", "PHDELWT", "FC", "PHIC", "FOM"} <= set(mtz.column_labels())
