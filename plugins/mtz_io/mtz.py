"""MTZ reflection files (CCP4 format) via gemmi.

Column choice when the config names none, in this order:

1. the first amplitude column (type F) immediately followed by its σ
   (type Q) — which skips calculated FC/PHIC pairs — and/or the first
   intensity (J) followed by Q;
2. Friedel pairs only (F(+)/F(−) of type G, I(+)/I(−) of type K, their σ
   of type L/M right after them or labelled ``SIG<label>``): merged to a
   mean amplitude or intensity (:func:`merge_friedel`; a centric
   reflection written into both columns counts once);
3. an amplitude column without σ (type F, not followed by a σ or a phase
   column, so map coefficients and FC are never taken for data): read with
   σ(F) unknown — the likelihood targets then take σ = 0 (the model-error
   variance σ_Δ² absorbs the measurement error, as phenix.refine's ML target
   does by default) and LS works with unit weights; a warning is logged.

Intensities without σ are refused: French–Wilson and the intensity
likelihood need σ(I).  Free-R flags: an integer column whose label contains
"free" (FreeR_flag, FREE, R-free-flags, FreeRflag, FREER ...), interpreted
by :func:`refinekit.plugin_api.numerics.reflections.free_flags_from_column`
(a column holding one value for every reflection defines no test set: a
test set is generated and the log says so).
"""

from __future__ import annotations

import gemmi
import numpy as np

from refinekit.plugin_api import InputError, Reader, ReflectionColumns, ReflectionData, Writer
from refinekit.plugin_api.fileio import atomic_output
from refinekit.plugin_api.numerics.reflections import (
    epsilon_and_centric, find_anomalous_pairs, free_flags_from_column, generate_free_flags,
    merge_friedel,
)

#: σ of amplitudes or intensities unknown: what the log says and the docs explain
NO_SIGMA_F = ("no σ(F) column: σ(F) treated as unknown (likelihood targets use σ = 0, "
              "LS uses unit weights)")


def _labels(mtz: gemmi.Mtz) -> list[tuple[str, str]]:
    return [(c.label, c.type) for c in mtz.columns]


def _next_column(mtz: gemmi.Mtz, label: str):
    cols = list(mtz.columns)
    idx = [c.label for c in cols].index(label)
    return cols[idx + 1] if idx + 1 < len(cols) else None


def _pair(mtz: gemmi.Mtz, value_type: str, label: str, sigma: str, path: str):
    """(value column, σ column or None) by label or by the 'type followed by Q' rule.

    A named amplitude column without a σ after it comes back with None (σ
    unknown); a named intensity column without σ is refused.
    """
    cols = list(mtz.columns)
    if label:
        col = mtz.column_with_label(label)
        if col is None:
            raise InputError(f"column {label!r} not found; columns are {_labels(mtz)}", path)
        if sigma:
            sig = mtz.column_with_label(sigma)
            if sig is None:
                raise InputError(f"column {sigma!r} not found; columns are {_labels(mtz)}", path)
            return col, sig
        after = _next_column(mtz, label)
        if after is not None and after.type == "Q":
            return col, after
        if value_type == "F":
            return col, None
        raise InputError(f"no σ column (type Q) follows the intensity column {label!r}; "
                         "French–Wilson and the intensity likelihood need σ(I): name it with "
                         "[data] sigi", path)
    for a, b in zip(cols, cols[1:]):
        if a.type == value_type and b.type == "Q":
            return a, b
    return None


def _friedel_sigma(mtz: gemmi.Mtz, label: str):
    """σ column of a Friedel-mate column: the next column if of type L/M, else ``SIG<label>``."""
    after = _next_column(mtz, label)
    if after is not None and after.type in "LM":
        return after
    for col in mtz.columns:
        if col.type in "LM" and col.label.upper() == "SIG" + label.upper():
            return col
    return None


def _anomalous(mtz: gemmi.Mtz, hkl: np.ndarray, sg: gemmi.SpaceGroup):
    """Merged (mean, σ or None, kind, description) from Friedel-pair columns, or None.

    Intensity pairs need σ columns; amplitude pairs without σ are merged with σ unknown.
    """
    types = {c.label: c.type for c in mtz.columns}
    _, centric = epsilon_and_centric(hkl, sg)
    for plus, minus in find_anomalous_pairs(list(types)):
        if types[plus] not in "GK" or types[minus] != types[plus]:
            continue
        sp, sm = _friedel_sigma(mtz, plus), _friedel_sigma(mtz, minus)
        kind = "f" if types[plus] == "G" else "i"
        if (sp is None or sm is None) and kind == "i":
            continue
        mean, sig = merge_friedel(mtz.column_with_label(plus).array,
                                  None if sp is None else sp.array,
                                  mtz.column_with_label(minus).array,
                                  None if sm is None else sm.array, centric)
        how = f"mean of {plus}/{minus} (Friedel mates" + (")" if sig is not None else ", no σ)")
        return mean, sig, kind, how
    return None


def _amplitude_without_sigma(mtz: gemmi.Mtz):
    """The first amplitude column followed by neither σ (Q) nor a phase (P), or None."""
    for col in mtz.columns:
        if col.type != "F":
            continue
        after = _next_column(mtz, col.label)
        if after is None or after.type not in "QP":
            return col
    return None


def _refuse_no_observations(mtz: gemmi.Mtz, path: str):
    lonely_i = [c.label for c in mtz.columns if c.type in "JK"]
    if lonely_i:
        return InputError(
            f"intensity column(s) {lonely_i} have no σ column (type Q after a mean intensity, "
            "type M or SIG<label> for I(+)/I(-)); French–Wilson and the intensity likelihood "
            f"need σ(I); columns are {_labels(mtz)}", path)
    return InputError(
        "no usable observations: expected an amplitude column (type F) or an intensity column "
        "(type J) followed by its σ (type Q), or Friedel pairs F(+)/F(-) (type G, σ type L) or "
        f"I(+)/I(-) (type K, σ type M); columns are {_labels(mtz)}", path)


def _free_column(mtz: gemmi.Mtz, label: str, path: str):
    if label:
        col = mtz.column_with_label(label)
        if col is None:
            raise InputError(f"free-R column {label!r} not found; columns are {_labels(mtz)}", path)
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
        sg = mtz.spacegroup or gemmi.SpaceGroup("P 1")
        used: dict[str, str] = {}
        values = {"f_obs": None, "sigma_f": None, "i_obs": None, "sigma_i": None}
        want_i_only = bool(columns.get("i")) and not columns.get("f")
        fpair = None if want_i_only else _pair(mtz, "F", columns.get("f", ""), columns.get("sigf", ""), path)
        ipair = None if columns.get("f") else _pair(mtz, "J", columns.get("i", ""), columns.get("sigi", ""), path)
        if fpair:
            values["f_obs"] = fpair[0].array.astype(float)
            used["f"] = fpair[0].label
            if fpair[1] is not None:
                values["sigma_f"] = fpair[1].array.astype(float)
                used["sigf"] = fpair[1].label
            else:
                used["warning"] = NO_SIGMA_F
        if ipair:
            values["i_obs"], values["sigma_i"] = ipair[0].array.astype(float), ipair[1].array.astype(float)
            used.update(i=ipair[0].label, sigi=ipair[1].label)
        if not fpair and not ipair:
            self._fallback(mtz, hkl, sg, values, used, path)
        free_col = _free_column(mtz, columns.get("free", ""), path)
        if free_col is not None:
            free, used["free"] = free_flags_from_column(
                free_col.array, hkl, sg, columns.get("free_convention", "auto"), free_col.label, path)
        else:
            free = generate_free_flags(hkl, sg)
            used["free"] = "generated 5 % test set (no free-R column)"
        return ReflectionData(hkl=hkl, cell=mtz.cell, spacegroup=sg, free=free,
                              source=path, columns=used, **values)

    @staticmethod
    def _fallback(mtz, hkl, sg, values: dict, used: dict, path: str) -> None:
        """Friedel pairs, else an amplitude without σ; else a clear refusal."""
        anom = _anomalous(mtz, hkl, sg)
        if anom is not None:
            mean, sig, kind, how = anom
            values["f_obs" if kind == "f" else "i_obs"] = mean
            values["sigma_f" if kind == "f" else "sigma_i"] = sig
            used["merged"] = how
            if sig is None:
                used["warning"] = NO_SIGMA_F
            return
        lonely_f = _amplitude_without_sigma(mtz)
        if lonely_f is None:
            raise _refuse_no_observations(mtz, path)
        values["f_obs"] = lonely_f.array.astype(float)
        used["f"] = lonely_f.label
        used["warning"] = NO_SIGMA_F


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
