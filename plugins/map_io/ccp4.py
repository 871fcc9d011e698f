"""CCP4/MRC map reader and writer (MapData ↔ file).

Header layout: CCP4 map format / MRC2014 (Cheng et al. 2015, J. Struct.
Biol. 192, 146–150), words NC/NR/NS (1–3), MODE (4), NCSTART/NRSTART/
NSSTART (5–7), MX/MY/MZ (8–10), cell (11–16), MAPC/MAPR/MAPS (17–19),
ISPG (23), ORIGIN (50–52, Å).  File I/O by gemmi (``gemmi.read_ccp4_map``).

Resulting :class:`MapData`: ``values`` float32 indexed [i, j, k] along
a, b, c; ``grid_shape`` = (MX, MY, MZ), the sampling of the whole cell;
``origin`` = start indices along a, b, c.  A cryo-EM box (cell = box, P 1)
and a full-cell crystallographic map both give ``values.shape ==
grid_shape``; an asymmetric-unit map of a crystal is expanded to the whole
cell with its space-group symmetry when it covers the asymmetric unit.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace

import gemmi
import numpy as np

from refinekit.plugin_api import InputError, MapData, Reader, Writer
from refinekit.plugin_api.numerics.maps import apply_overall_b, check_resolution, check_values


@dataclass
class Ccp4ReaderOptions:
    """resolution: map resolution d in Å (None: given later by the run config).
    b_sharpen: overall B (Å²) applied on reading as exp(−B s²/4); > 0 blurs,
    < 0 sharpens, 0 leaves the map unchanged.
    """

    resolution: float | None = None
    b_sharpen: float = 0.0


def _header(m: gemmi.Ccp4Map, path: str) -> dict:
    """The header words this reader needs, validated (InputError names the word)."""
    h = {
        "n_crs": tuple(m.header_i32(w) for w in (1, 2, 3)),
        "start_crs": tuple(m.header_i32(w) for w in (5, 6, 7)),
        "grid": tuple(m.header_i32(w) for w in (8, 9, 10)),
        "cell": tuple(m.header_float(w) for w in range(11, 17)),
        "axes": tuple(m.header_i32(w) for w in (17, 18, 19)),
        "origin_A": tuple(m.header_float(w) for w in (50, 51, 52)),
    }
    if min(h["n_crs"]) <= 0:
        raise InputError(f"map has no grid points: NC, NR, NS = {h['n_crs']}", path)
    if sorted(h["axes"]) != [1, 2, 3]:
        raise InputError(f"broken header: MAPC/MAPR/MAPS = {h['axes']} is not a permutation of 1, 2, 3", path)
    if min(h["grid"]) <= 0:
        raise InputError(f"broken header: cell sampling MX, MY, MZ = {h['grid']} must be positive", path)
    a, b, c, al, be, ga = h["cell"]
    if not (min(a, b, c) > 0 and all(0 < x < 180 for x in (al, be, ga))):
        raise InputError(f"broken header: unit cell {h['cell']} (Å, degrees) is invalid", path)
    return h


def _to_xyz(m: gemmi.Ccp4Map, h: dict) -> tuple[np.ndarray, tuple[int, int, int]]:
    """File data (columns, rows, sections) → array [a, b, c] and start indices along a, b, c."""
    data = np.array(m.grid, copy=True)  # indexed [column, row, section]
    pos = [h["axes"].index(axis) for axis in (1, 2, 3)]
    start = tuple(int(h["start_crs"][p]) for p in pos)
    return np.ascontiguousarray(data.transpose(pos), dtype=np.float32), start


def _origin_from_angstrom(h: dict, grid: tuple, path: str) -> tuple[int, int, int] | None:
    """MRC2014 ORIGIN (Å) as grid indices when NCSTART.. are zero; None when unused."""
    origin = np.asarray(h["origin_A"], dtype=np.float64)
    if any(h["start_crs"]) or not np.any(origin) or not np.all(np.isfinite(origin)):
        return None
    cell = gemmi.UnitCell(*h["cell"])
    u = np.asarray(cell.frac.apply(gemmi.Position(*origin)).tolist()) * np.asarray(grid)
    idx = np.rint(u)
    if np.max(np.abs(u - idx)) > 1e-3:
        raise InputError(f"map ORIGIN {tuple(origin)} Å is not a whole number of voxels "
                         f"({tuple(np.round(u, 3))}); resample the map onto its grid", path)
    return tuple(int(v) for v in idx)


def read_ccp4(path: str, resolution: float | None = None, b_sharpen: float = 0.0) -> MapData:
    """Read a CCP4/MRC map into :class:`MapData` (see the module docstring)."""
    path = str(path)
    if not os.path.isfile(path):
        raise InputError("map file not found", path)
    try:
        m = gemmi.read_ccp4_map(path)
    except (RuntimeError, ValueError, MemoryError) as exc:
        raise InputError(f"cannot read as a CCP4/MRC map: {exc}", path) from None
    h = _header(m, path)
    values, start = _to_xyz(m, h)
    grid = tuple(int(v) for v in h["grid"])
    origin_a = _origin_from_angstrom(h, grid, path)
    if origin_a is not None:
        start = origin_a
    sg = m.grid.spacegroup or gemmi.SpaceGroup("P 1")
    cell = gemmi.UnitCell(*h["cell"])
    shape = values.shape
    if all(s >= g for s, g in zip(shape, grid)):
        values = values[:grid[0], :grid[1], :grid[2]]  # one period is enough
    elif sg.number != 1 and origin_a is None:
        m.setup(float("nan"))  # expand the asymmetric unit by symmetry
        full = np.array(m.grid, copy=True)
        if full.shape == grid and np.all(np.isfinite(full)):
            values, start = np.ascontiguousarray(full, dtype=np.float32), (0, 0, 0)
    check_values(values, path)
    out = MapData(values=np.ascontiguousarray(values, dtype=np.float32), cell=cell, spacegroup=sg,
                  grid_shape=grid, origin=tuple(int(s) for s in start), source=path)
    if b_sharpen:
        out = apply_overall_b(out, float(b_sharpen))
    if resolution is not None:
        out = replace(out, resolution=check_resolution(resolution, out))
    return out


class Ccp4MapReader(Reader):
    """CCP4/MRC density maps → MapData (cryo-EM boxes and crystallographic maps).

    Axis order from MAPC/MAPR/MAPS, start from NCSTART.. (or MRC2014 ORIGIN in
    Å when the starts are zero), optional overall-B sharpening/blurring.
    """

    name = "ccp4"
    produces = "map"
    extensions = (".ccp4", ".map", ".mrc")
    Options = Ccp4ReaderOptions

    def read(self, path: str) -> MapData:
        return read_ccp4(path, self.options.resolution, self.options.b_sharpen)


def write_ccp4(m: MapData, path: str) -> None:
    """Write ``m`` as a mode-2 CCP4 map, atomically (temporary file + os.replace)."""
    path = str(path)
    ccp4 = gemmi.Ccp4Map()
    ccp4.grid = gemmi.FloatGrid(np.ascontiguousarray(m.values, dtype=np.float32))
    ccp4.grid.unit_cell = m.cell
    ccp4.grid.spacegroup = m.spacegroup
    ccp4.update_ccp4_header(2, True)
    for w, v in zip((5, 6, 7), m.origin):
        ccp4.set_header_i32(w, int(v))
    for w, v in zip((8, 9, 10), m.grid_shape):
        ccp4.set_header_i32(w, int(v))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".ccp4", dir=directory)
    os.close(fd)
    try:
        ccp4.write_ccp4_map(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Ccp4MapWriter(Writer):
    """MapData → CCP4 map file (mode 2, float32), written atomically."""

    name = "ccp4"
    consumes = "map"
    extensions = (".ccp4", ".map", ".mrc")

    def write(self, obj: MapData, path: str) -> None:
        write_ccp4(obj, path)
