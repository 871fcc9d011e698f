"""MTZ reflection files (CCP4 format) via gemmi.

Column choice when the config names none: the first amplitude column
(type F) immediately followed by its σ (type Q) — which skips calculated
FC/PHIC pairs — else the first intensity (J) followed by Q; when only
Friedel pairs exist (G/L or K/M columns: F(+), σF(+), F(−), σF(−)) they
are merged to a mean.  Free-R flags: an integer column whose label contains
"free" (FreeR_flag, FREE, R-free-flags, FreeRflag, FREER ...), interpreted
by :func:`refinekit.plugin_api.numerics.reflections.interpret_free_flags`.
"""

from __future__ import annotations

import gemmi
import numpy as np

from refinekit.plugin_api import InputError, Reader, ReflectionColumns, ReflectionData, Writer
from refinekit.plugin_api.fileio import atomic_output
from refinekit.plugin_api.numerics.reflections import (
    find_anomalous_pairs, generate_free_flags, interpret_free_flags, merge_friedel,
)


def _pair(mtz: gemmi.Mtz, value_type: str, label: str, sigma: str, path: str):
    """(value column, sigma column) by label or by the 'type followed by Q' rule."""
    cols = list(mtz.columns)
    if label:
        col = mtz.column_with_label(label)
        if col is None:
            raise InputError(f"column {label!r} not found; columns are "
                             f"{[c.label for c in cols]}", path)
        if sigma:
            sig = mtz.column_with_label(sigma)
            if sig is None:
                raise InputError(f"column {sigma!r} not found", path)
            return col, sig
        idx = [c.label for c in cols].index(label)
        if idx + 1 < len(cols) and cols[idx + 1].type == "Q":
            return col, cols[idx + 1]
        raise InputError(f"no σ column (type Q) follows {label!r}; name it with sigf/sigi", path)
    for a, b in zip(cols, cols[1:]):
        if a.type == value_type and b.type == "Q":
            return a, b
    return None


def _anomalous(mtz: gemmi.Mtz, path: str):
    """Merged (mean, σ, kind) from Friedel-pair columns, or None."""
    labels = [c.label for c in mtz.columns]
    types = {c.label: c.type for c in mtz.columns}
    for plus, minus in find_anomalous_pairs(labels):
        if types[plus] not in "GK":
            continue
        sp = _sigma_after(mtz, plus)
        sm = _sigma_after(mtz, minus)
        if sp is None or sm is None:
            continue
        mean, sig = merge_friedel(mtz.column_with_label(plus).array, sp.array,
                                  mtz.column_with_label(minus).array, sm.array)
        kind = "f" if types[plus] == "G" else "i"
        return mean, sig, kind, f"mean of {plus}/{minus}"
    return None


def _sigma_after(mtz: gemmi.Mtz, label: str):
    cols = list(mtz.columns)
    idx = [c.label for c in cols].index(label)
    if idx + 1 < len(cols) and cols[idx + 1].type in "LM":
        return cols[idx + 1]
    return None


def _free_column(mtz: gemmi.Mtz, label: str, path: str):
    if label:
        col = mtz.column_with_label(label)
        if col is None:
            raise InputError(f"free-R column {label!r} not found", path)
        return col
    for col in mtz.columns:
        if col.type == "I" and "free" in col.label.lower():
            return col
    return None


class MtzReader(Reader):
    """Reads F or I (+σ) and free-R flags from an MTZ file."""

    name = "mtz"
    produces = "reflections"
    extensions = (".mtz",)

    def read(self, path: str, **hints) -> ReflectionData:
        columns = hints.get("columns") or {}
        try:
            mtz = gemmi.read_mtz_file(path)
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(f"not a readable MTZ file: {exc}", path) from None
        if mtz.nreflections == 0:
            raise InputError("the MTZ file has no reflections", path)
        hkl = np.asarray(mtz.make_miller_array(), dtype=np.int32)
        used: dict[str, str] = {}
        values = {"f_obs": None, "sigma_f": None, "i_obs": None, "sigma_i": None}
        want_i_only = bool(columns.get("i")) and not columns.get("f")
        fpair = None if want_i_only else _pair(mtz, "F", columns.get("f", ""), columns.get("sigf", ""), path)
        ipair = None if columns.get("f") else _pair(mtz, "J", columns.get("i", ""), columns.get("sigi", ""), path)
        if fpair:
            values["f_obs"], values["sigma_f"] = fpair[0].array.astype(float), fpair[1].array.astype(float)
            used.update(f=fpair[0].label, sigf=fpair[1].label)
        if ipair:
            values["i_obs"], values["sigma_i"] = ipair[0].array.astype(float), ipair[1].array.astype(float)
            used.update(i=ipair[0].label, sigi=ipair[1].label)
        if not fpair and not ipair:
            anom = _anomalous(mtz, path)
            if anom is None:
                raise InputError(
                    "no usable observations: expected an amplitude column (type F) or an "
                    "intensity column (type J) followed by its σ (type Q), or Friedel pairs; "
                    f"columns are {[(c.label, c.type) for c in mtz.columns]}", path)
            mean, sig, kind, how = anom
            values["f_obs" if kind == "f" else "i_obs"] = mean
            values["sigma_f" if kind == "f" else "sigma_i"] = sig
            used["merged"] = how
        free_col = _free_column(mtz, columns.get("free", ""), path)
        sg = mtz.spacegroup or gemmi.SpaceGroup("P 1")
        if free_col is not None:
            free = interpret_free_flags(free_col.array, columns.get("free_convention", "auto"), path)
            used["free"] = free_col.label
        else:
            free = generate_free_flags(hkl, sg)
            used["free"] = "generated"
        return ReflectionData(hkl=hkl, cell=mtz.cell, spacegroup=sg, free=free,
                              source=path, columns=used, **values)


class MtzWriter(Writer):
    """Writes ReflectionColumns (e.g. FC/PHIC, FWT/PHWT) to an MTZ file."""

    name = "mtz"
    consumes = "reflections"
    extensions = (".mtz",)

    def write(self, obj: ReflectionColumns, path: str) -> None:
        mtz = gemmi.Mtz(with_base=True)
        mtz.spacegroup = obj.spacegroup
        mtz.set_cell_for_all(obj.cell)
        mtz.add_dataset("refinekit")
        for label, col_type, _ in obj.columns:
            mtz.add_column(label, col_type)
        table = np.column_stack([np.asarray(obj.hkl, dtype=np.float32)] +
                                [np.asarray(a, dtype=np.float32) for _, _, a in obj.columns])
        mtz.set_data(table)
        mtz.history = ["refinekit"]
        with atomic_output(path) as tmp:
            mtz.write_to_file(tmp)
