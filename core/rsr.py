"""A whole real-space refinement job (``refinekit rsr``): model + density map.

Reads the model and the map (a CCP4/MRC reader plugin), takes the map
resolution d (Å) from the caller, checks the inputs (resolution plausible
and coarser than the grid's Nyquist limit; every atom inside the map box
unless the map is a full unit cell of a crystal), runs the configured
stages (default preset ``cryo-em``) with the map as the run's ``data``, and
writes the outputs of :mod:`refinekit.runner` (``refined.cif``,
``refined.pdb``, ``stats.json``, ``log.txt``).

``stats.json`` carries, besides the per-cycle records, ``start`` and
``final`` real-space figures from the ``rs-metrics`` step (``cc_mask``,
``cc_box``, per chain and, for ``final``, per residue), the final
geometry (``rmsd_bonds`` Å, ``rmsd_angles`` degrees), ``seconds_per_cycle``
and, when the weight scheme exposes a ``report`` dict (``rsr-search``
does), that report under ``weight_search``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

from refinekit.plugin_api.errors import InputError
from refinekit.plugin_api.model import MapData
from refinekit.plugin_api.numerics.maps import check_resolution, covers_cell, require_model_inside

from .engine import Run
from .io import _component_for, check_readable, read_model, reconcile_cells
from .runner import (
    RunLog, _refuse_overwrite, _write_outputs, add_ligands, checkpointer, load_config,
    prepare_model,
)

#: The real-space figures step run before and after refinement.
METRICS_STEP = "rs-metrics"


def read_map(registry, path: str | Path, resolution: float | None) -> MapData:
    """Read a density map with the reader registered for its extension; set and check d (Å)."""
    path = check_readable(path)
    m = _component_for(registry, "reader", "produces", "map", path).read(str(path))
    if not isinstance(m, MapData):
        raise InputError(f"the map reader returned {type(m).__name__}, not a map", str(path))
    return replace(m, resolution=check_resolution(resolution, m))


def _is_crystal_map(m: MapData) -> bool:
    """A full-cell map of a crystal (periodic, space group other than P 1)."""
    return covers_cell(m) and m.spacegroup.number != 1


def check_model_against_map(model, m: MapData) -> str | None:
    """Refuse a model outside the map box; for a crystal map, reconcile the cells (note returned)."""
    if _is_crystal_map(m):
        return reconcile_cells(model, m, m.source)
    require_model_inside(m, model.xyz)
    return None


def rsr(registry, raw: dict, model_path: str, map_path: str, resolution: float | None,
        outdir: str, preset: str | None = None, cycles: int | None = None,
        echo: bool = True, ligands: Sequence[str] = ()) -> dict[str, Any]:
    """Run a real-space refinement job and write its outputs; returns the summary dict.

    ``ligands``: extra restraint dictionaries (``--ligand``), see :func:`add_ligands`.
    """
    config = load_config(registry, raw, preset, cycles, "cryo-em")
    add_ligands(registry, config, ligands)
    out = Path(outdir)
    _refuse_overwrite([model_path, map_path], out)
    log = RunLog(echo)
    model = read_model(registry, model_path)
    m = read_map(registry, map_path, resolution if resolution is not None else config.data.resolution)
    note = check_model_against_map(model, m)
    if note:
        log(note)
    model = prepare_model(registry, config, model, log)
    log(f"model {model_path}: {model.n_atoms} atoms; map {map_path}: {m.values.shape} of "
        f"{m.grid_shape} grid points, cell {m.cell.a:.2f} {m.cell.b:.2f} {m.cell.c:.2f} Å, "
        f"{m.spacegroup.hm}, d {m.resolution:g} Å")
    out.mkdir(parents=True, exist_ok=True)
    run = Run(registry, config, model, m, log=log, checkpoint=checkpointer(registry, config, out))
    metrics = registry.create("step", METRICS_STEP, {}, METRICS_STEP)
    start = metrics.run(run)
    start.pop("cc_mask_residue", None)
    log(f"start: CC_mask {start['cc_mask']:.4f}  CC_box {start['cc_box']:.4f}")
    t0 = time.perf_counter()
    summary = run.run()
    summary["seconds_total"] = time.perf_counter() - t0
    summary["start"] = start
    summary["final"].update(metrics.run(run))
    summary["seconds_per_cycle"] = [c["seconds"] for c in summary["cycles"][1:]]
    report = getattr(run.weight_scheme, "report", None)
    if isinstance(report, dict) and report:
        summary["weight_search"] = report
    summary["config"] = {"preset": config.preset, "resolution": m.resolution,
                         "stages": [asdict(s) for s in config.stages]}
    final = summary["final"]
    log(f"final: CC_mask {final['cc_mask']:.4f}  CC_box {final['cc_box']:.4f}"
        + "".join(f"  {k} {final[k]:.4f}" for k in ("rmsd_bonds", "rmsd_angles") if k in final))
    _write_outputs(registry, run, summary, out, log)
    return summary
