"""The ``refinekit`` command line.

Sub-commands (a stable contract other tools script against):

* ``refinekit plugins`` — the discovered plugins and their components;
* ``refinekit fcalc MODEL --d-min D [--engine fft|direct] -o OUT.mtz``;
* ``refinekit refine MODEL DATA [--config F.toml] [--preset P] [--cycles N] [--ligand F.cif ...] -o OUTDIR``
  — preset ``xray`` when neither --preset nor --config is given;
* ``refinekit rsr MODEL MAP --resolution D [--config F.toml] [--cycles N] [--ligand F.cif ...] -o OUTDIR``
  — real-space refinement against a density map (default preset ``cryo-em``);
* ``refinekit demo [-o OUTDIR]`` — refine the embedded example;
* ``refinekit validate CONFIG.toml`` — check a config without running.

User errors print one line ``refinekit: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

# Before numpy is imported: one BLAS thread.  The kernels parallelise with
# numba/FFTW; BLAS threads inside scipy's L-BFGS-B only oversubscribe the
# cores (measured ~8x slower minimisations on a busy 2-core machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from refinekit.plugin_api.errors import RefinekitError  # noqa: E402

from . import __version__  # noqa: E402

#: preset of ``refine MODEL DATA`` given neither --preset nor --config: the likelihood protocol a
#: crystallographer expects (a config without a preset key keeps the minimal ``default`` preset)
BARE_REFINE_PRESET = "xray"


def _pre_config(argv: Sequence[str]) -> dict:
    """Read --config early: its [plugins] table decides what is discovered."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return {}
    from .config import read_toml

    return read_toml(known.config)


def _registry(raw: dict):
    from .registry import Registry

    plugins = raw.get("plugins", {}) if isinstance(raw.get("plugins", {}), dict) else {}
    allow = plugins.get("allow", []) if isinstance(plugins.get("allow", []), list) else []
    deny = plugins.get("deny", []) if isinstance(plugins.get("deny", []), list) else []
    return Registry.discover(allow=allow, deny=deny)


def build_parser(registry) -> argparse.ArgumentParser:
    """The argument parser, with options contributed by plugins."""
    parser = argparse.ArgumentParser(prog="refinekit", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"refinekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("plugins", help="list discovered plugins and components")

    p = sub.add_parser("fcalc", help="structure factors of a model (FC/PHIC in MTZ)")
    p.add_argument("model")
    p.add_argument("--d-min", type=float, required=True, help="resolution limit, Å")
    p.add_argument("--engine", default="fft", help="fcalc engine (fft, direct, ...)")
    p.add_argument("--table", default="xray", help="scattering table (xray, ...)")
    p.add_argument("-o", "--output", required=True, help="output MTZ")

    p = sub.add_parser("refine", help="refine a model against reflection data")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--config", help="TOML config (see docs/config.md)")
    p.add_argument("--preset", help="preset name (overrides the config's; without --preset and "
                                    f"--config: {BARE_REFINE_PRESET})")
    p.add_argument("--cycles", type=int, help="macro-cycles per stage")
    p.add_argument("--ligand", action="append", default=[], metavar="FILE.cif",
                   help="extra restraint dictionary (repeatable); added to every term "
                        "with a 'ligands' option, e.g. geometry")
    p.add_argument("-o", "--output", required=True, help="output directory")

    p = sub.add_parser("rsr", help="real-space refinement against a density map (CCP4/MRC)")
    p.add_argument("model")
    p.add_argument("map")
    p.add_argument("--resolution", type=float, help="map resolution d, Å (required)")
    p.add_argument("--config", help="TOML config (see docs/config.md)")
    p.add_argument("--preset", help="preset name (default cryo-em)")
    p.add_argument("--cycles", type=int, help="macro-cycles per stage")
    p.add_argument("--ligand", action="append", default=[], metavar="FILE.cif",
                   help="extra restraint dictionary (repeatable), as for refine")
    p.add_argument("-o", "--output", required=True, help="output directory")

    p = sub.add_parser("demo", help="refine the embedded example (no network, no ../shared)")
    p.add_argument("-o", "--output", default="refinekit_demo", help="output directory")

    p = sub.add_parser("validate", help="check a TOML config")
    p.add_argument("config")

    for name, subparser in sub.choices.items():
        registry.hook().refinekit_add_cli_arguments(command=name, parser=subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``refinekit`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        raw = _pre_config(argv)
        registry = _registry(raw)
        args = build_parser(registry).parse_args(argv)
        handler = {"plugins": cmd_plugins, "fcalc": cmd_fcalc, "refine": cmd_refine,
                   "rsr": cmd_rsr, "demo": cmd_demo, "validate": cmd_validate}[args.command]
        return handler(args, registry, raw) or 0
    except RefinekitError as exc:
        print(f"refinekit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refinekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `refinekit plugins | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# --------------------------------------------------------------------------- commands
def cmd_plugins(args, registry, raw) -> int:
    """Print one row per component (and per plugin that failed to load)."""
    rows = [("name", "kind", "version", "distribution", "enabled", "plugin", "error")]
    for record in sorted(registry.plugins.values(), key=lambda r: r.name):
        if not record.components:
            rows.append(("-", "-", record.version, record.distribution,
                         "yes" if record.enabled else "no", record.name, record.error or ""))
        for kind, name in record.components:
            rows.append((name, kind, record.version, record.distribution,
                         "yes" if record.enabled else "no", record.name, ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_fcalc(args, registry, raw) -> int:
    """Write FC/PHIC for all unique reflections to --d-min."""
    import gemmi
    import numpy as np

    from refinekit.plugin_api.errors import ConfigError
    from refinekit.plugin_api.model import ReflectionColumns

    from .io import read_model, write

    if not args.d_min > 0:
        raise ConfigError(f"--d-min must be a positive resolution in Å, got {args.d_min}", "d-min")
    _guard_outputs([args.model], [args.output])
    model = read_model(registry, args.model)
    hkl = np.array(gemmi.make_miller_array(model.cell, model.spacegroup, args.d_min))
    table = registry.create("table", args.table)
    engine = registry.create("fcalc", args.engine)
    engine.use_table(table)
    f = engine.calc(model, hkl)
    cols = ReflectionColumns(hkl, model.cell, model.spacegroup, [
        ("FC", "F", np.abs(f)), ("PHIC", "P", np.degrees(np.angle(f)))])
    write(registry, cols, "reflections", args.output)
    print(f"wrote {len(hkl)} reflections to {args.output} (engine {args.engine}, d_min {args.d_min} Å)")
    return 0


def cmd_validate(args, registry, raw) -> int:
    """Parse and validate a config, creating every component it names."""
    from .config import build_config, check_required_plugins, read_toml

    raw = read_toml(args.config)
    config = build_config(raw, registry, default_preset="default")
    check_required_plugins(config.required_plugins)
    _check_components(registry, config)
    print(f"{args.config}: valid (preset '{config.preset}', {len(config.stages)} stage(s))")
    return 0


def _check_components(registry, config) -> None:
    from .engine import create_components

    create_components(registry, config)


def cmd_refine(args, registry, raw) -> int:
    """Refine MODEL against DATA; write OUTDIR/refined.cif and stats.json."""
    from .runner import refine

    preset = args.preset
    if preset is None and not args.config:  # a bare command: the full likelihood protocol
        preset = BARE_REFINE_PRESET
    summary = refine(registry, raw, args.model, args.data, args.output,
                     preset=preset, cycles=args.cycles, ligands=args.ligand)
    _print_summary(summary, args.output)
    return 0


def cmd_rsr(args, registry, raw) -> int:
    """Refine MODEL against MAP in real space; write OUTDIR/refined.cif and stats.json."""
    from .rsr import rsr

    summary = rsr(registry, raw, args.model, args.map, args.resolution, args.output,
                  preset=args.preset, cycles=args.cycles, ligands=args.ligand)
    start, final = summary["start"], summary["final"]
    geometry = "  ".join(f"{k}={final[k]:.4f}" for k in ("rmsd_bonds", "rmsd_angles") if k in final)
    print(f"CC_mask {start['cc_mask']:.4f} -> {final['cc_mask']:.4f}  "
          f"CC_box {start['cc_box']:.4f} -> {final['cc_box']:.4f}  {geometry}\n"
          f"outputs in {args.output}/ (refined.cif, stats.json, log.txt)")
    return 0


def cmd_demo(args, registry, raw) -> int:
    """Refine the embedded example (a displaced copy of PDB 5E5Z) with the demo config."""
    from .config import read_toml
    from .runner import example_files, refine

    files = example_files()
    raw = read_toml(files["config"])
    summary = refine(registry, raw, files["model"], files["data"], args.output)
    _print_summary(summary, args.output)
    return 0


def _print_summary(summary: dict, outdir: str) -> None:
    first, final = summary["cycles"][0], summary["final"]
    keys = [k for k in ("r_work", "r_free", "rmsd_bonds", "rmsd_angles") if k in final]
    start = "  ".join(f"{k}={first.get(k, float('nan')):.4f}" for k in keys)
    end = "  ".join(f"{k}={final[k]:.4f}" for k in keys)
    print(f"start: {start}\nfinal: {end}\noutputs in {outdir}/ (refined.cif, stats.json, log.txt)")


def _guard_outputs(inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Refuse to write over an input file."""
    from refinekit.plugin_api.errors import InputError

    ins = {Path(p).resolve() for p in inputs}
    for out in outputs:
        if Path(out).resolve() in ins:
            raise InputError("output would overwrite an input file; choose another name", out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
