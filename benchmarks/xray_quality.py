"""Benchmark: quality of `refinekit refine --preset xray` on the shared X-ray datasets.

    python benchmarks/xray_quality.py [--cycles 10] [--only deposited|convergence] [--servalcat]

Issue 3, acceptance b and c, one refinement after the other (never two at once):

* **b — from deposited models** (1l2h, 4iid, 3nr7; 10 macro-cycles): R-free
  start → end, bond and angle rmsd; pass when R-free rises by ≤ 0.005, bonds
  ≤ 0.02 Å, angles ≤ 2.0°.
* **c — convergence** from ``1l2h_p03.cif`` and ``1l2h_p05.cif`` (Gaussian
  shifts of 0.3 / 0.5 Å rms, all B = 30 Å²): R-free within 0.015 of the R-free
  reached from the deposited model, and the rmsd to the deposited model over
  non-H atoms of amino-acid residues below 0.15 / 0.25 Å.  With
  ``--servalcat`` (``pip install servalcat``) servalcat
  ``refine_xtal_norefmac`` runs from the same starts, and its refined model is
  scored by the same rmsd and by refinekit's scaler (``refine --cycles 0``), so
  both R-free values come from one definition (servalcat's own R1 counts only
  reflections with I/σ > 2).

4iid runs with REFINEKIT_MONLIB=../shared/monlib (its glycans), as in benchmarks/refine.py.  Reference
figures: ../shared/bench/REFERENCE.md (servalcat from the 0.5 Å start: R-free
0.2832, rmsd 0.295 Å).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import gemmi
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refine import DATA, MONLIB, evaluate_model, refine_subprocess  # noqa: E402  (benchmarks/refine.py)

DEPOSITED = {
    "1l2h": (DATA / "1l2h" / "1l2h.cif", DATA / "1l2h" / "1l2h.mtz"),
    "4iid": (DATA / "4iid_glyco_2chain" / "4iid.pdb", DATA / "4iid_glyco_2chain" / "4iid.mtz"),
    "3nr7": (DATA / "3nr7_lowres_tls" / "3nr7.pdb", DATA / "3nr7_lowres_tls" / "3nr7.mtz"),
}
#: start file, rmsd goal (Å)
STARTS = {"p03": (DATA / "1l2h" / "1l2h_p03.cif", 0.15), "p05": (DATA / "1l2h" / "1l2h_p05.cif", 0.25)}
R_FREE_RISE_MAX, BONDS_MAX, ANGLES_MAX, R_FREE_GAP_MAX = 0.005, 0.02, 2.0, 0.015


def refinekit(name: str, model: Path, mtz: Path, cycles: int, out: Path) -> dict:
    """``refinekit refine --preset xray`` in a subprocess (benchmarks/refine.py); stats.json + wall (s)."""
    proc, wall = refine_subprocess(name, model, mtz, cycles, out)
    if proc.returncode != 0:
        raise RuntimeError(f"refinekit failed on {model.name}: {proc.stderr.strip()[-400:]}")
    stats = json.loads((out / "stats.json").read_text())
    stats["wall"] = wall
    return stats


def servalcat(model: Path, mtz: Path, cycles: int, workdir: Path) -> Path | None:
    """servalcat refine_xtal_norefmac from ``model``; the refined model's path (None: not installed)."""
    exe = shutil.which("servalcat") or str(Path(sys.executable).with_name("servalcat"))
    if not Path(exe).exists():
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "refine_xtal_norefmac", "--model", str(model), "--hklin", str(mtz), "-s", "xray",
                    "--ncycle", str(cycles), "--monlib", str(MONLIB), "-o", "serv"],
                   capture_output=True, text=True, cwd=workdir, check=True)
    return workdir / "serv.mmcif"


def protein_positions(path: Path) -> dict[tuple, np.ndarray]:
    """Non-H atom positions (Å) of amino-acid residues keyed by (chain, residue number, atom, altloc)."""
    st = gemmi.read_structure(str(path))
    out = {}
    for ch in st[0]:
        for res in ch:
            info = gemmi.find_tabulated_residue(res.name)
            if info is None or not info.is_amino_acid():
                continue
            for at in res:
                if not at.is_hydrogen():
                    out[(ch.name, str(res.seqid), at.name, at.altloc)] = np.array(at.pos.tolist())
    return out


def rmsd_to(reference: dict, path: Path) -> float:
    """rmsd (Å) of ``path``'s atoms to the matching atoms of ``reference``."""
    other = protein_positions(path)
    keys = [k for k in reference if k in other]
    diff = np.array([reference[k] - other[k] for k in keys])
    return float(np.sqrt((diff ** 2).sum(axis=1).mean()))


def deposited_runs(cycles: int, tmp: Path) -> dict[str, dict]:
    results = {}
    for name, (model, mtz) in DEPOSITED.items():
        s = refinekit(name, model, mtz, cycles, tmp / name)
        start, final = s["cycles"][0], s["final"]
        ok = (final["r_free"] - start["r_free"] <= R_FREE_RISE_MAX and final["rmsd_bonds"] <= BONDS_MAX
              and final["rmsd_angles"] <= ANGLES_MAX)
        results[name] = {"r_free_start": start["r_free"], "r_free": final["r_free"],
                         "r_work": final["r_work"], "bonds": final["rmsd_bonds"],
                         "angles": final["rmsd_angles"], "wall": s["wall"], "pass": ok}
        print(f"b {name}: R-free {start['r_free']:.4f} -> {final['r_free']:.4f} (R-work {final['r_work']:.4f}), "
              f"bonds {final['rmsd_bonds']:.4f} Å, angles {final['rmsd_angles']:.2f}°, {s['wall']:.1f} s  "
              f"{'PASS' if ok else 'FAIL'}", flush=True)
    return results


def convergence_runs(cycles: int, tmp: Path, with_servalcat: bool, r_free_deposited: float | None) -> dict:
    model, mtz = DEPOSITED["1l2h"]
    reference = protein_positions(model)
    if r_free_deposited is None:
        r_free_deposited = refinekit("1l2h", model, mtz, cycles, tmp / "dep")["final"]["r_free"]
    print(f"c reference: R-free reached from the deposited 1l2h {r_free_deposited:.4f}", flush=True)
    results = {"r_free_deposited": r_free_deposited}
    for label, (start, goal) in STARTS.items():
        s = refinekit("1l2h", start, mtz, cycles, tmp / label)
        before, after = rmsd_to(reference, start), rmsd_to(reference, tmp / label / "refined.cif")
        r_free = s["final"]["r_free"]
        ok = after < goal and r_free - r_free_deposited <= R_FREE_GAP_MAX
        results[label] = {"rmsd_start": before, "rmsd": after, "r_free": r_free,
                          "bonds": s["final"]["rmsd_bonds"], "angles": s["final"]["rmsd_angles"],
                          "wall": s["wall"], "pass": ok}
        print(f"c {label}: rmsd {before:.3f} -> {after:.3f} Å (goal < {goal}), R-free {r_free:.4f} "
              f"(gap {r_free - r_free_deposited:+.4f}), bonds {s['final']['rmsd_bonds']:.4f} Å, "
              f"angles {s['final']['rmsd_angles']:.2f}°, {s['wall']:.1f} s  {'PASS' if ok else 'FAIL'}",
              flush=True)
        if with_servalcat:
            refined = servalcat(start, mtz, cycles, tmp / f"serv_{label}")
            if refined is None:
                print("  servalcat not installed (pip install servalcat)")
                continue
            scored = evaluate_model("1l2h", refined, mtz, tmp / f"serv_{label}")
            if "error" in scored:
                print(f"  servalcat {label}: scoring failed: {scored['error'][0]}")
                continue
            results[f"servalcat_{label}"] = {"rmsd": rmsd_to(reference, refined), "r_free": scored["r_free"]}
            print(f"  servalcat {label}: rmsd {results[f'servalcat_{label}']['rmsd']:.3f} Å, R-free "
                  f"{scored['r_free']:.4f} (refinekit's scaler)", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--only", choices=["deposited", "convergence"])
    p.add_argument("--servalcat", action="store_true", help="also run servalcat from the perturbed starts")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="rk_quality_") as tmp:
        if a.only != "convergence":
            out["deposited"] = deposited_runs(a.cycles, Path(tmp))
        if a.only != "deposited":
            dep = out.get("deposited", {}).get("1l2h", {}).get("r_free")
            out["convergence"] = convergence_runs(a.cycles, Path(tmp), a.servalcat, dep)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
