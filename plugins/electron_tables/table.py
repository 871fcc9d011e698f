"""Elastic electron scattering factors for MicroED and cryo-EM.

f_e(s) = Σ_{k=1..5} a_k exp(−b_k s²/4), s = 1/d (Å⁻¹), in Å: the
five-Gaussian fits of Peng, Ren, Dudarev & Whelan (1996) Acta Cryst. A52,
257, tabulated in International Tables for Crystallography Vol. C,
Table 4.3.2.2 (coefficients as gemmi ships them, ``Element.c4322``).
Neutral atoms; a formal charge is ignored (the Mott–Bethe correction for
ions diverges at s → 0 and is usually left out in refinement, as in
servalcat's default).
"""

from __future__ import annotations

from functools import lru_cache

import gemmi
import numpy as np

from refinekit.plugin_api import GaussianCoefficients, InputError, ScatteringTable


@lru_cache(maxsize=None)
def _coefficients(symbol: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    element = gemmi.Element(symbol)
    coef = element.c4322 if element.atomic_number else None
    if coef is None:
        raise InputError(f"no electron scattering factor for element {symbol!r}")
    values = coef.get_coefs()
    return tuple(values[:5]), tuple(values[5:10])


class ElectronTable(ScatteringTable):
    """Peng (1996) five-Gaussian electron scattering factors (Å), neutral atoms."""

    name = "electron"
    radiation = "electron"

    def coefficients(self, element, charge) -> GaussianCoefficients:
        n = len(element)
        a = np.empty((n, 5))
        b = np.empty((n, 5))
        for i, sym in enumerate(element):
            a[i], b[i] = _coefficients(str(sym))
        return GaussianCoefficients(a, b, np.zeros(n))
