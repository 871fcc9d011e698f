"""Benchmark: `refinekit refine --preset xray` against servalcat on the same inputs.

    python benchmarks/refine.py [--cases 1l2h 4iid] [--cycles 10] [--no-servalcat] [--no-fcalc]

For each case (deposited models in ../shared/data) this runs, one after the
other in this one process tree (never two refinements at once):

* ``refinekit refine MODEL DATA --preset xray --cycles N`` in a subprocess
  (4iid runs with REFINEKIT_MONLIB=../shared/monlib for its glycans);
* when ``servalcat`` is on PATH (benchmark-only: ``pip install servalcat``),
  ``servalcat refine_xtal_norefmac --model M --hklin MTZ -s xray --ncycle N
  --monlib ../shared/monlib``;

* servalcat's refined model (``serv.mmcif``) evaluated by
  ``refinekit refine serv.mmcif DATA --preset xray --cycles 0`` (the same
  French–Wilson amplitudes, hydrogens, bulk-solvent and anisotropic scaling
  and R definition as ours, no refinement);

and prints the wall time, R-work, R-free (start → end) and bond/angle rmsd of
both, plus our FFT Fcalc and Fcalc+gradient time beside gemmi's Fcalc
(functions of benchmarks/fcalc.py).  Both add hydrogens at ideal positions
(refinekit's xray preset: ``hydrogens`` preparer + ``place-hydrogens`` step).

servalcat's own R1 is computed only over reflections with I/σ(I) > 2 (its
log says so), so it is printed for reference but not compared: the ratio
line (wall time, R-free and R-work differences) uses servalcat's model under our scaler
("same scaler as refinekit").  On 1l2h the two differ by ≈0.006 in R-work.
Reference figures: ../shared/bench/REFERENCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fcalc import CASES, DATA, best_time, gemmi_runner  # noqa: E402  (benchmarks/fcalc.py)

MONLIB = DATA.parent / "monlib"
#: cases whose residues need dictionaries beyond the built-in library
NEEDS_MONLIB = {"4iid"}


def refinekit_command() -> list[str]:
    """The `refinekit` console script of this interpreter's environment."""
    exe = Path(sys.executable).with_name("refinekit")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from refinekit.cli import main; main()"]


def run_refinekit(name: str, model: Path, mtz: Path, cycles: int, workdir: Path) -> dict:
    """Run refinekit in a subprocess; wall time and figures from its stats.json."""
    proc, wall = refine_subprocess(name, model, mtz, cycles, workdir / "out")
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"], "wall": wall}
    stats = json.loads((workdir / "out" / "stats.json").read_text())
    start, final = stats["cycles"][0], stats["final"]
    cycles = stats["cycles"][1:]
    minimize = sum(v for c in cycles for k, v in c.items() if k.endswith("minimize_seconds"))
    return {"wall": wall, "r_work": final["r_work"], "r_free_start": start["r_free"],
            "r_free": final["r_free"], "bonds": final["rmsd_bonds"], "angles": final["rmsd_angles"],
            "cycles_seconds": sum(c["seconds"] for c in cycles), "minimize_seconds": minimize,
            "start_seconds": start["seconds"],
            "evaluations": sum(v for c in cycles for k, v in c.items() if k.endswith("n_evaluations"))}


def refine_subprocess(name: str, model: Path, mtz: Path, cycles: int, out: Path):
    """(completed process, wall time s) of ``refinekit refine --preset xray --cycles N``."""
    cmd = refinekit_command() + ["refine", str(model), str(mtz), "--preset", "xray",
                                 "--cycles", str(cycles), "-o", str(out)]
    env = dict(os.environ)
    if name in NEEDS_MONLIB:  # every component reading dictionaries (geometry, hydrogens) sees it
        env["REFINEKIT_MONLIB"] = str(MONLIB)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return proc, time.perf_counter() - t0


def evaluate_model(name: str, model: Path, mtz: Path, workdir: Path) -> dict:
    """R-work/R-free of ``model`` under refinekit's xray scaling (0 cycles: scale, no refinement)."""
    proc, _ = refine_subprocess(name, model, mtz, 0, workdir / "eval")
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    final = json.loads((workdir / "eval" / "stats.json").read_text())["final"]
    return {"r_work": final["r_work"], "r_free": final["r_free"]}


def run_servalcat(model: Path, mtz: Path, cycles: int, workdir: Path) -> dict | None:
    """Run servalcat when installed; figures from its ``*_stats.json`` (first and last cycle)."""
    exe = shutil.which("servalcat") or str(Path(sys.executable).with_name("servalcat"))
    if not Path(exe).exists():
        return None
    cmd = [exe, "refine_xtal_norefmac", "--model", str(model), "--hklin", str(mtz), "-s", "xray",
           "--ncycle", str(cycles), "--monlib", str(MONLIB), "-o", "serv"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    wall = time.perf_counter() - t0
    found = sorted(workdir.glob("serv*stats.json"))
    if proc.returncode != 0 or not found:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"],
                "wall": wall}
    cycles_out = json.loads(found[0].read_text())
    first, last = cycles_out[0], cycles_out[-1]

    def summary(c: dict) -> dict:
        return c.get("data", {}).get("summary", {})

    def pick(d: dict, *keys: str) -> float:
        return next((float(d[k]) for k in keys if k in d), float("nan"))

    geom = last.get("geom", {}).get("summary", {})
    return {"wall": wall, "model": workdir / "serv.mmcif",
            "r_work": pick(summary(last), "Rwork", "R1work"),
            "r_free_start": pick(summary(first), "Rfree", "R1free"),
            "r_free": pick(summary(last), "Rfree", "R1free"),
            "bonds": _servalcat_rmsd(geom, "Bond distances, non H"),
            "angles": _servalcat_rmsd(geom, "Bond angles, non H")}


def _servalcat_rmsd(geom: dict, label: str) -> float:
    """r.m.s.d. of one restraint type from servalcat's geometry summary ({column: {type: value}})."""
    try:
        return float(geom["r.m.s.d."][label])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def fcalc_times(model_path: Path, mtz_path: Path, repeats: int) -> tuple[float, float, float]:
    """(our Fcalc, our Fcalc + gradient, gemmi Fcalc) best (wall, CPU) times in s."""
    import gemmi

    from refinekit.plugin_api import AtomModel
    from refinekit.plugins.fcalc_fft.engine import FftFcalc, FftOptions
    from refinekit.plugins.xray_tables.table import XrayTable

    st = gemmi.read_structure(str(model_path))
    st.setup_entities()
    model = AtomModel.from_structure(st, str(model_path))
    hkl = np.array(gemmi.read_mtz_file(str(mtz_path)).make_miller_array())
    d_min = float(model.cell.calculate_d_array(hkl).min())
    eng = FftFcalc(FftOptions())
    eng.use_table(XrayTable())
    dt_df = np.random.default_rng(0).normal(size=(len(hkl), 2)) @ np.array([1.0, 1j])

    def both():
        eng.calc(model, hkl)
        return eng.gradient(model, hkl, dt_df)
    return (best_time(lambda: eng.calc(model, hkl), repeats), best_time(both, repeats),
            best_time(gemmi_runner(st, d_min), repeats))


def show(label: str, res: dict | None) -> None:
    if res is None:
        print(f"  {label:10s} not installed (pip install servalcat to compare)")
    elif "error" in res:
        print(f"  {label:10s} FAILED after {res['wall']:.1f} s: {res['error'][0]}")
    else:
        print(f"  {label:10s} wall {res['wall']:7.1f} s  R-work {res['r_work']:.4f}  "
              f"R-free {res['r_free_start']:.4f} -> {res['r_free']:.4f}  "
              f"bonds {res['bonds']:.4f} Å  angles {res['angles']:.2f}°"
              + ("  (servalcat's R1 over I/σ>2)" if "model" in res else ""))
        common = res.get("common")
        if common and "error" in common:
            print(f"  {'':10s} same scaler as refinekit: FAILED: {common['error'][0]}")
        elif common:
            print(f"  {'':10s} same scaler as refinekit: R-work {common['r_work']:.4f}  "
                  f"R-free {common['r_free']:.4f}")
        if "cycles_seconds" in res:
            rest = res["wall"] - res["cycles_seconds"] - res["start_seconds"]
            print(f"  {'':10s} start (scale + statistics) {res['start_seconds']:.1f} s, cycles "
                  f"{res['cycles_seconds']:.1f} s (minimisations {res['minimize_seconds']:.1f} s, "
                  f"{res['evaluations']} target evaluations), reading/imports/writing {rest:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the Fcalc timings")
    parser.add_argument("--no-servalcat", action="store_true")
    parser.add_argument("--no-fcalc", action="store_true")
    args = parser.parse_args()
    for name in args.cases:
        model, mtz = CASES[name]
        if not model.exists():
            print(f"{name}: data not found under {DATA}")
            continue
        print(f"{name}: {model.name} + {mtz.name}, {args.cycles} cycles")
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_refinekit(name, model, mtz, args.cycles, Path(tmp))
        show("refinekit", ours)
        theirs = None
        if not args.no_servalcat:
            with tempfile.TemporaryDirectory() as tmp:
                theirs = run_servalcat(model, mtz, args.cycles, Path(tmp))
                if theirs and "error" not in theirs:
                    theirs["common"] = evaluate_model(name, theirs["model"], mtz, Path(tmp))
            show("servalcat", theirs)
        common = (theirs or {}).get("common", {"error": ""})
        if ours and "error" not in ours and "error" not in common:
            print(f"  wall-time ratio refinekit/servalcat {ours['wall'] / theirs['wall']:.2f}, "
                  f"R-free difference {ours['r_free'] - common['r_free']:+.4f}, "
                  f"R-work difference {ours['r_work'] - common['r_work']:+.4f} (same scaler)")
        if not args.no_fcalc:
            (calc, calc_cpu), (both, both_cpu), (gem, gem_cpu) = fcalc_times(model, mtz, args.repeats)
            print(f"  Fcalc wall/CPU ms: refinekit {calc * 1e3:.1f}/{calc_cpu * 1e3:.1f}, +gradient "
                  f"{both * 1e3:.1f}/{both_cpu * 1e3:.1f}, gemmi {gem * 1e3:.1f}/{gem_cpu * 1e3:.1f} "
                  f"(ratios to gemmi wall/CPU: calc {calc / gem:.2f}/{calc_cpu / gem_cpu:.2f}, "
                  f"calc+grad {both / gem:.2f}/{both_cpu / gem_cpu:.2f})")


if __name__ == "__main__":
    main()
