"""Benchmark: refinekit FFT Fcalc (and Fcalc + gradient) against gemmi and cctbx.

    python benchmarks/fcalc.py [--repeats 7] [--threads 2]

For 1l2h and 4iid (../shared/data), times — best of several repeats after a
warm-up, all in this one run — of

* refinekit ``fft``: ``calc`` alone, and ``calc`` + ``gradient`` (one adjoint);
* gemmi 0.7: DensityCalculatorX (rate 1.5, refmac-compatible blur) + FFT to
  structure factors + the asymmetric-unit extraction;
* cctbx (when importable, e.g. ``pip install cctbx-base``): FFT structure
  factors from an xray.structure (IT92 table) for the same Miller indices.

Accuracy against the exact ``direct`` engine is printed for 1l2h (Σ|ΔF|/Σ|F|, worst shell)
with ``--accuracy``.  The first call of a fresh process (numba cache loading, FFT planning)
is printed separately; FFT plans come from FFTW wisdom when
``REFINEKIT_FFTW_MEASURE=1`` stored some earlier (see plugin_api/numerics/fft.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    "1l2h": (DATA / "1l2h" / "1l2h.cif", DATA / "1l2h" / "1l2h.mtz"),
    "4iid": (DATA / "4iid_glyco_2chain" / "4iid.pdb", DATA / "4iid_glyco_2chain" / "4iid.mtz"),
}


def best_time(fn, repeats: int) -> tuple[float, float]:
    """Minimum wall time and minimum process CPU time (s, all threads) of ``repeats`` calls after a warm-up.

    On a busy machine wall times of multi-threaded code suffer most; CPU time
    (the sum over threads) is the conservative figure for it.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def gemmi_runner(st, d_min: float):
    import gemmi

    dc = gemmi.DensityCalculatorX()
    dc.d_min = d_min
    dc.rate = 1.5
    dc.set_refmac_compatible_blur(st[0])
    dc.grid.setup_from(st)

    def run():
        dc.put_model_density_on_grid(st[0])
        grid = gemmi.transform_map_to_f_phi(dc.grid, half_l=True)
        return grid.prepare_asu_data(dmin=d_min)
    return run


def cctbx_time(model_path: Path, hkl: np.ndarray, repeats: int) -> tuple[float, float] | None:
    """Best time of cctbx FFT structure factors, measured in a separate process.

    cctbx's boost-python extensions cannot share a process with gemmi's and
    pyFFTW's libraries here (segfault at import), hence the subprocess.
    """
    with tempfile.TemporaryDirectory() as tmp:
        hkl_file = Path(tmp) / "hkl.npy"
        np.save(hkl_file, hkl)
        proc = subprocess.run([sys.executable, __file__, "--cctbx-worker", str(model_path), str(hkl_file),
                               "--repeats", str(repeats)], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    wall, cpu = proc.stdout.split()[-2:]
    return float(wall), float(cpu)


def cctbx_worker(model_path: str, hkl_file: str, repeats: int) -> None:
    """Print the best wall and CPU times (s) of cctbx FFT structure factors (IT92) for these indices."""
    import iotbx.pdb
    from cctbx import miller
    from cctbx.array_family import flex

    hkl = np.load(hkl_file)
    xrs = iotbx.pdb.input(file_name=model_path).xray_structure_simple()
    xrs.scattering_type_registry(table="it1992")
    indices = flex.miller_index([tuple(int(v) for v in h) for h in hkl])
    mset = miller.set(crystal_symmetry=xrs.crystal_symmetry(), indices=indices, anomalous_flag=False)

    def run():
        return mset.structure_factors_from_scatterers(xray_structure=xrs, algorithm="fft").f_calc()
    print(*best_time(run, repeats))


def fmt(t: tuple[float, float]) -> str:
    return f"{t[0] * 1e3:8.1f} / {t[1] * 1e3:8.1f}"


def ratio(a: tuple[float, float], b: tuple[float, float]) -> str:
    return f"{a[0] / b[0]:.2f}/{a[1] / b[1]:.2f}"


def shell_error(model, hkl: np.ndarray, fa: np.ndarray, fb: np.ndarray) -> float:
    d = model.cell.calculate_d_array(hkl)
    return max(np.abs(fa[s] - fb[s]).sum() / np.abs(fb[s]).sum()
               for s in np.array_split(np.argsort(d), 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accuracy", action="store_true", help="also compare 1l2h with the direct engine")
    parser.add_argument("--cctbx-worker", nargs=2, metavar=("MODEL", "HKL_NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cctbx_worker:  # before gemmi/pyFFTW are loaded (see cctbx_time)
        cctbx_worker(*args.cctbx_worker, args.repeats)
        return
    import gemmi

    from refinekit.plugin_api import AtomModel
    from refinekit.plugins.fcalc_fft.engine import FftFcalc, FftOptions
    from refinekit.plugins.xray_tables.table import XrayTable

    for name, (model_path, mtz_path) in CASES.items():
        if not model_path.exists():
            print(f"{name}: data not found under {DATA}")
            continue
        st = gemmi.read_structure(str(model_path))
        st.setup_entities()
        model = AtomModel.from_structure(st, str(model_path))
        hkl = np.array(gemmi.read_mtz_file(str(mtz_path)).make_miller_array())
        d_min = float(model.cell.calculate_d_array(hkl).min())
        eng = FftFcalc(FftOptions(threads=args.threads))
        eng.use_table(XrayTable())
        rng = np.random.default_rng(0)
        dt_df = rng.normal(size=len(hkl)) + 1j * rng.normal(size=len(hkl))

        def ours_calc():
            return eng.calc(model, hkl)

        def ours_both():
            eng.calc(model, hkl)
            return eng.gradient(model, hkl, dt_df)

        t0 = time.perf_counter()
        ours_calc()
        first = time.perf_counter() - t0
        t_calc = best_time(ours_calc, args.repeats)
        t_both = best_time(ours_both, args.repeats)
        t_gemmi = best_time(gemmi_runner(st, d_min), args.repeats)
        t_cctbx = cctbx_time(model_path, hkl, args.repeats)
        geo = eng._geometry
        print(f"{name}: {model.n_atoms} atoms, {len(hkl)} reflections, d_min {d_min:.2f} Å, "
              f"grid {geo.shape}, B_add {eng._b_add(model, geo):.0f} Å², first call {first:.2f} s "
              f"(FFT planning {geo.plan_seconds:.2f} s)")
        print(f"  times in ms, wall / CPU (CPU = sum over threads; ours uses {args.threads} threads)")
        print(f"  refinekit fft calc           {fmt(t_calc)}")
        print(f"  refinekit fft calc+gradient  {fmt(t_both)}")
        print(f"  gemmi DensityCalculatorX     {fmt(t_gemmi)}   ratios wall/CPU: "
              f"calc/gemmi {ratio(t_calc, t_gemmi)}, calc+grad/gemmi {ratio(t_both, t_gemmi)}")
        if t_cctbx is not None:
            print(f"  cctbx fft structure factors  {fmt(t_cctbx)}   ratios wall/CPU: "
                  f"calc/cctbx {ratio(t_calc, t_cctbx)}, calc+grad/cctbx {ratio(t_both, t_cctbx)}")
        else:
            print("  cctbx not available (pip install cctbx-base to compare)")
        if args.accuracy and name == "1l2h":
            from refinekit.plugins.fcalc_direct.engine import DirectFcalc
            ref = DirectFcalc()
            ref.use_table(XrayTable())
            err = shell_error(model, hkl, ours_calc(), ref.calc(model, hkl))
            print(f"  worst-shell Σ|F_fft − F_direct|/Σ|F_direct| = {err:.2e}")


if __name__ == "__main__":
    main()
