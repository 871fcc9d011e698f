"""Seconds per real-space target+gradient evaluation, beside one FFT Fcalc+gradient pass.

Usage: /tmp/venv/bin/python benchmarks/rsr.py [--no-fcalc]

Times ``map-value`` (both interpolations; the cryo-em preset's xyz target)
and ``map-cc`` at d = 3 Å (its B target: a model map and its adjoint, two
FFT Fcalc passes of the box) on:

* 6i5a: its cryo-EM box map and model (2,393 atoms, 46×70×43 grid).
* 4iid: the crystal model's coordinates (~15k atoms) in a P1 box map with
  1.0 Å voxels and a 5 Å margin, filled with the model's own density
  (gemmi DensityCalculatorX), as a cryo-EM-like box.
Unless ``--no-fcalc``, also times one FftFcalc calc + gradient for the box's P1
reflections to d just above Nyquist (2 × grid step) (the reciprocal-space alternative).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gemmi
import numpy as np

from refinekit.plugin_api import AtomModel, MapData
from refinekit.plugin_api.numerics.maps import grid_step, p1_hkl
from refinekit.plugins.electron_tables.table import ElectronTable
from refinekit.plugins.fcalc_fft.engine import FftFcalc
from refinekit.plugins.map_cc.term import MapCCTerm
from refinekit.plugins.map_io.ccp4 import read_ccp4
from refinekit.plugins.map_value.term import MapValueTerm
from refinekit.plugins.xray_tables.table import XrayTable

#: d (Å) of the map-cc model map
CC_RESOLUTION = 3.0

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def per_call(fun, repeats: int = 20) -> tuple[float, float]:
    """(wall, CPU) seconds per call after one warm-up call (CPU time is steadier on a loaded machine)."""
    fun()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fun()
    return (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats


def box_map_for(model: AtomModel, voxel: float = 1.0, margin: float = 5.0) -> tuple[MapData, AtomModel]:
    """A P1 box around the model (shifted to start at ``margin``) holding its density."""
    lo = model.xyz.min(0) - margin
    model.xyz -= lo
    edges = model.xyz.max(0) + margin
    shape = tuple(int(v) for v in np.ceil(edges / voxel))
    cell = gemmi.UnitCell(*(np.array(shape) * voxel), 90, 90, 90)
    st = model.to_structure()
    st.cell = cell
    st.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorX()
    calc.grid.unit_cell = cell
    calc.grid.spacegroup = gemmi.SpaceGroup("P 1")
    calc.grid.set_size(*shape)
    calc.add_model_density_to_grid(st[0])
    m = MapData(np.array(calc.grid, dtype=np.float32), cell, gemmi.SpaceGroup("P 1"), shape,
                resolution=CC_RESOLUTION)
    return m, AtomModel.from_structure(st)


def bench(label: str, m: MapData, model: AtomModel, fcalc: bool) -> None:
    for kind in ("catmull-rom", "hermite-fd4"):
        term = MapValueTerm(MapValueTerm.Options(interpolation=kind))
        term.setup(SimpleNamespace(data=m, model=model))
        wall, cpu = per_call(lambda: term.evaluate(model))
        print(f"{label}: {model.n_atoms} atoms, grid {m.values.shape}, map-value {kind}: "
              f"{wall * 1e3:.2f} ms wall, {cpu * 1e3:.2f} ms CPU")
    electron = FftFcalc()
    electron.use_table(ElectronTable())
    term = MapCCTerm(MapCCTerm.Options(resolution=CC_RESOLUTION))
    term.setup(SimpleNamespace(data=m, model=model, fcalc=electron))
    wall, cpu = per_call(lambda: term.evaluate(model), repeats=3)
    print(f"{label}: map-cc (d {CC_RESOLUTION:g} Å, {len(term.mapper.hkl)} reflections, mask "
          f"{len(term.mask)} points): {wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU")
    if fcalc:
        engine = FftFcalc()
        engine.use_table(XrayTable())
        d = 2.0 * float(grid_step(m).max()) * 1.001
        hkl = p1_hkl(m.cell, m.grid_shape, d)
        box = model.copy()
        box.structure.cell = m.cell
        box.structure.spacegroup_hm = "P 1"
        grad_in = np.ones(len(hkl), complex)
        wall, cpu = per_call(lambda: engine.gradient(box, hkl, grad_in + 0 * engine.calc(box, hkl)), repeats=3)
        print(f"{label}: FftFcalc calc+gradient, {len(hkl)} reflections: {wall * 1e3:.1f} ms wall, "
              f"{cpu * 1e3:.1f} ms CPU")


def main() -> None:
    fcalc = "--no-fcalc" not in sys.argv
    em = DATA / "6i5a_tmv_em_box"
    m = read_ccp4(str(em / "6i5a_box.ccp4"), resolution=CC_RESOLUTION)
    model = AtomModel.from_structure(gemmi.read_structure(str(em / "6i5a_box_complete.pdb")))
    bench("6i5a", m, model, fcalc)
    big = AtomModel.from_structure(gemmi.read_structure(str(DATA / "4iid_glyco_2chain" / "4iid.pdb")))
    m, big = box_map_for(big)
    bench("4iid box", m, big, fcalc)


if __name__ == "__main__":
    main()
