"""Reading inputs and writing outputs through the registered Reader/Writer plugins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from refinekit.plugin_api.errors import InputError, PluginError
from refinekit.plugin_api.fileio import atomic_output
from refinekit.plugin_api.model import AtomModel, ReflectionData

#: Largest relative cell-edge difference (and angle difference, degrees)
#: between model and data that is accepted; the data's cell is then used.
CELL_LENGTH_TOLERANCE = 0.02
CELL_ANGLE_TOLERANCE = 1.0


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for compressed in (".gz",):
        if name.endswith(compressed):
            name = name[: -len(compressed)]
    return Path(name).suffix


def _component_for(registry, kind: str, attr: str, what: str, path: Path):
    ext = _suffix(path)
    matches, broken = [], []
    for name in registry.names(kind):
        spec = registry.spec(kind, name)
        try:
            cls = spec.load()
        except PluginError as exc:
            broken.append(str(exc))
            continue
        if getattr(cls, attr) == what and ext in cls.extensions:
            matches.append(name)
    if not matches:
        why = f" ({'; '.join(broken)})" if broken else ""
        raise InputError(f"no installed {kind} handles '{ext or '(no extension)'}' files "
                         f"for a {what}{why}", str(path))
    return registry.create(kind, matches[0])


def check_readable(path: str | Path) -> Path:
    """The path, if it names a readable file; else InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", str(path))
    if not path.is_file():
        raise InputError("not a regular file", str(path))
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", str(path)) from None
    return path


def read_model(registry, path: str | Path) -> AtomModel:
    """Read an atomic model with the reader registered for its extension."""
    path = check_readable(path)
    return _component_for(registry, "reader", "produces", "model", path).read(str(path))


def read_reflections(registry, path: str | Path, columns: dict | None = None) -> ReflectionData:
    """Read reflection data with the reader registered for its extension."""
    path = check_readable(path)
    reader = _component_for(registry, "reader", "produces", "reflections", path)
    return reader.read(str(path), columns=columns or {})


def write(registry, obj: Any, kind_of_object: str, path: str | Path) -> None:
    """Write ``obj`` with the writer registered for the extension of ``path``."""
    path = Path(path)
    _component_for(registry, "writer", "consumes", kind_of_object, path).write(obj, str(path))


def write_json(obj: Any, path: str | Path) -> None:
    """Atomically write JSON (numpy scalars/arrays converted)."""
    def default(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"cannot serialise {type(value).__name__}")

    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, default=default)
            fh.write("\n")


def reconcile_cells(model: AtomModel, data, data_path: str = "") -> str | None:
    """Check model and data describe the same crystal; adopt the data's cell.

    Space groups must match (same Hermann–Mauguin symbol).  Cell edges may
    differ by up to 2 % and angles by 1° (a model refined against another
    data set of the same crystal form); then the model takes the data's
    cell, keeping Cartesian coordinates, and a note is returned.  Larger
    differences are refused with both cells in the message.
    """
    mc, dc = model.cell, data.cell
    msg_cells = (f"model cell ({mc.a:.3f} {mc.b:.3f} {mc.c:.3f} {mc.alpha:.2f} {mc.beta:.2f} "
                 f"{mc.gamma:.2f}) vs data cell ({dc.a:.3f} {dc.b:.3f} {dc.c:.3f} "
                 f"{dc.alpha:.2f} {dc.beta:.2f} {dc.gamma:.2f})")
    msg_sg = model.spacegroup.xhm(), data.spacegroup.xhm()
    if msg_sg[0] != msg_sg[1]:
        raise InputError(f"model space group {msg_sg[0]!r} differs from data space group "
                         f"{msg_sg[1]!r}", data_path or None)
    lengths = np.array([mc.a, mc.b, mc.c]) / np.array([dc.a, dc.b, dc.c]) - 1.0
    angles = np.array([mc.alpha, mc.beta, mc.gamma]) - np.array([dc.alpha, dc.beta, dc.gamma])
    if np.max(np.abs(lengths)) > CELL_LENGTH_TOLERANCE or np.max(np.abs(angles)) > CELL_ANGLE_TOLERANCE:
        raise InputError(f"model and data cells differ: {msg_cells}; edges may differ by at most "
                         f"{CELL_LENGTH_TOLERANCE:.0%} and angles by {CELL_ANGLE_TOLERANCE}°",
                         data_path or None)
    if np.max(np.abs(lengths)) > 1e-4 or np.max(np.abs(angles)) > 1e-3:
        model.structure.cell = data.cell
        model.structure.setup_cell_images()
        return f"note: {msg_cells}; using the data cell"
    return None
