"""A whole `refine` job: read inputs, prepare data, run stages, write outputs.

Outputs in OUTDIR: ``refined.cif`` (mmCIF), ``refined.pdb`` (when the model
fits the PDB format), ``stats.json``, ``log.txt``, and during the run
``checkpoint.cif`` (the model after the latest cycle; removed on success).
Every file is written atomically; inputs are never overwritten.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from refinekit.plugin_api.errors import ConfigError, InputError, RefinekitError

from .config import build_config, check_required_plugins
from .engine import Run
from .io import check_readable, read_model, read_reflections, reconcile_cells, write, write_json


class RunLog:
    """Collects log lines, echoing them to stdout."""

    def __init__(self, echo: bool = True):
        self.lines: list[str] = []
        self.echo = echo
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        self.lines.append(message)
        if self.echo:
            print(message, flush=True)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def example_files() -> dict[str, str]:
    """Paths of the embedded example (model, data, config)."""
    root = resources.files("refinekit") / "data" / "example"
    return {"model": str(root / "5e5z_shifted.pdb"), "data": str(root / "5e5z.mtz"),
            "config": str(root / "demo.toml")}


def refine(registry, raw: dict, model_path: str, data_path: str, outdir: str,
           preset: str | None = None, cycles: int | None = None,
           echo: bool = True, ligands: Sequence[str] = ()) -> dict[str, Any]:
    """Run a refinement job and write its outputs; returns the summary dict.

    ``ligands``: extra restraint dictionaries (``--ligand``), see :func:`add_ligands`.
    """
    config = load_config(registry, raw, preset, cycles, "default")
    add_ligands(registry, config, ligands)
    out = Path(outdir)
    _refuse_overwrite([model_path, data_path], out)
    log = RunLog(echo)
    model = read_model(registry, model_path)
    data = read_reflections(registry, data_path, _columns(config))
    note = reconcile_cells(model, data, data_path)
    if note:
        log(note)
    _log_columns(data, log)
    data = _prepare(registry, config, data, log)
    model = prepare_model(registry, config, model, log)
    log(f"model {model_path}: {model.n_atoms} atoms; data {data_path}: {len(data)} reflections, "
        f"{int(data.free.sum())} free, d {data.resolution()[0]:.2f}–{data.resolution()[1]:.2f} Å")
    out.mkdir(parents=True, exist_ok=True)
    table_set = config.fcalc.table != "auto"  # "auto" is resolved and logged by Run
    run = Run(registry, config, model, data, log=log, checkpoint=checkpointer(registry, config, out))
    if table_set:
        log(f"scattering table: {config.fcalc.table} (set by [fcalc] table)")
    summary = run.run()
    summary["config"] = {"preset": config.preset, "stages": [asdict(s) for s in config.stages]}
    _write_outputs(registry, run, summary, out, log)
    return summary


def load_config(registry, raw: dict, preset: str | None, cycles: int | None,
                default_preset: str):
    """The validated RunConfig: preset (argument, config or default), --cycles, plugin checks."""
    if preset:
        raw = {**raw, "preset": preset}
    config = build_config(raw, registry, default_preset=default_preset)
    if cycles is not None:
        if cycles < 0:
            raise InputError(f"--cycles must be ≥ 0, got {cycles}")
        for stage in config.stages:
            stage.cycles = cycles
    check_required_plugins(config.required_plugins)
    registry.hook().refinekit_configure(config=config)
    return config


def _reads_dictionaries(registry, kind: str, name: str) -> bool:
    options_cls = getattr(registry.spec(kind, name).load(), "Options", None)
    return (options_cls is not None and is_dataclass(options_cls)
            and "ligands" in {f.name for f in fields(options_cls)})


def add_ligands(registry, config, ligands: Sequence[str]) -> None:
    """Append dictionary files (``--ligand FILE.cif``) to every component with a ``ligands`` option.

    Components declare that they read restraint dictionaries by a list option
    named ``ligands`` in their Options dataclass (e.g. the terms ``geometry``
    and ``adp-similarity``, the model preparer ``hydrogens``, the step
    ``place-hydrogens``).  Each file must be readable; ConfigError when no
    configured term takes dictionaries.
    """
    if not ligands:
        return
    for path in ligands:
        check_readable(path)
    files = [str(p) for p in ligands]
    takers = []
    for key, section in config.term_sections().items():
        if section.enabled and _reads_dictionaries(registry, "term", section.component or key):
            options = dict(config.terms[key].get("options", {}))
            options["ligands"] = [*options.get("ligands", []), *files]
            config.terms[key] = {**config.terms[key], "options": options}
            takers.append(key)
    for name in config.model.prepare:
        if _reads_dictionaries(registry, "model-preparer", name):
            options = dict(config.model.prepare_options.get(name, {}))
            options["ligands"] = [*options.get("ligands", []), *files]
            config.model.prepare_options = {**config.model.prepare_options, name: options}
    for steps in [config.initial_steps, *(stage.steps for stage in config.stages)]:
        for k, step in enumerate(steps):
            if _reads_dictionaries(registry, "step", step["step"]):
                steps[k] = {**step, "ligands": [*step.get("ligands", []), *files]}
    if not takers:
        raise ConfigError("--ligand was given but no configured term reads restraint dictionaries "
                          "(a term option 'ligands', e.g. geometry)", "ligand")


def checkpointer(registry, config, out: Path):
    """The per-cycle callback writing checkpoint.cif and a partial stats.json into ``out``."""
    def checkpoint(run: Run, partial: dict) -> None:
        if config.output.checkpoint:
            write(registry, run.model.to_structure(), "model", out / "checkpoint.cif")
            write_json(partial, out / "stats.json")

    return checkpoint


def _columns(config) -> dict:
    d = config.data
    return {"f": d.f, "sigf": d.sigf, "i": d.i, "sigi": d.sigi, "free": d.free,
            "free_convention": d.free_convention}


def _log_columns(data, log) -> None:
    """Which columns the reader used (merged Friedel mates, generated flags) and its warnings."""
    used = {k: v for k, v in data.columns.items() if k != "warning"}
    if used:
        log("data columns: " + ", ".join(f"{k}={v}" for k, v in used.items()))
    if data.columns.get("warning"):
        log(f"warning: {data.source}: {data.columns['warning']}")


def prepare_model(registry, config, model, log):
    """Run the ``[model] prepare`` list (e.g. hydrogens) on a freshly read model."""
    for name in config.model.prepare:
        preparer = registry.create("model-preparer", name, config.model.prepare_options.get(name, {}),
                                   f"model.prepare_options.{name}")
        model, figures = preparer.prepare(model)
        log(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return model


def _prepare(registry, config, data, log):
    for i, name in enumerate(config.data.prepare):
        preparer = registry.create("preparer", name, config.data.prepare_options.get(name, {}),
                                   f"data.prepare_options.{name}")
        data, figures = preparer.prepare(data)
        data.index = np.arange(len(data))
        log(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return data


def _refuse_overwrite(inputs: list[str], out: Path) -> None:
    ins = {Path(p).resolve() for p in inputs}
    for name in ("refined.cif", "refined.pdb", "refined.mtz", "stats.json", "log.txt", "checkpoint.cif"):
        if (out / name).resolve() in ins:
            raise InputError("output would overwrite an input file", str(out / name))


def _write_outputs(registry, run: Run, summary: dict, out: Path, log: RunLog) -> None:
    st = run.model.to_structure()
    write(registry, st, "model", out / "refined.cif")
    if run.config.output.pdb:
        try:
            write(registry, st, "model", out / "refined.pdb")
        except RefinekitError as exc:
            log(f"refined.pdb not written: {exc}")
    if run.config.output.mtz:
        for name, term in run.terms.items():
            term.setup(run)
            columns = term.map_coefficients(run.model) if hasattr(term, "map_coefficients") else None
            if columns is not None:
                write(registry, columns, "reflections", out / "refined.mtz")
                log(f"map coefficients from '{name}' written to refined.mtz")
                break
    write_json(summary, out / "stats.json")
    checkpoint = out / "checkpoint.cif"
    if checkpoint.exists():
        checkpoint.unlink()
    from refinekit.plugin_api.fileio import atomic_output

    with atomic_output(out / "log.txt") as tmp:
        Path(tmp).write_text(log.text())
