"""X-ray scattering factors from the IT92 four-Gaussian fit.

f0(s) = Σ_{k=1..4} a_k exp(-b_k s²/4) + c with s = 1/d (Å⁻¹);
Waasmaier & Kirfel-style fits as tabulated in International Tables for
Crystallography Vol. C (1992), Table 6.1.1.4; coefficients as gemmi exposes
them (``gemmi.IT92_get_exact``).  Units: electrons.  Anomalous f', f'' are
not included (no wavelength here).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import gemmi
import numpy as np

from refinekit.plugin_api import GaussianCoefficients, InputError, ScatteringTable


@dataclass
class XrayOptions:
    """use_charge: take ion coefficients (e.g. Fe3+) when IT92 has them."""

    use_charge: bool = True


def _ion_coefficients(element: gemmi.Element, charge: int):
    """IT92 coefficients of an ion, or None (gemmi only looks ions up when its
    global ignore-charge switch is off; the switch is restored afterwards)."""
    ignore = gemmi.IT92_get_ignore_charge()
    gemmi.IT92_set_ignore_charge(False)
    try:
        return gemmi.IT92_get_exact(element, charge)
    finally:
        gemmi.IT92_set_ignore_charge(ignore)


@lru_cache(maxsize=None)
def _coefficients(symbol: str, charge: int, use_charge: bool) -> tuple:
    element = gemmi.Element(symbol)
    if element.atomic_number == 0:
        raise InputError(f"no X-ray form factor for element {symbol!r}")
    coef = _ion_coefficients(element, charge) if use_charge and charge else None
    if coef is None:
        coef = element.it92
    values = coef.get_coefs()
    return tuple(values[:4]), tuple(values[4:8]), values[8]


class XrayTable(ScatteringTable):
    """IT92 X-ray form factors (electrons), neutral atoms or ions."""

    name = "xray"
    radiation = "xray"
    Options = XrayOptions

    def coefficients(self, element, charge) -> GaussianCoefficients:
        n = len(element)
        a = np.empty((n, 4))
        b = np.empty((n, 4))
        c = np.empty(n)
        for i, (sym, q) in enumerate(zip(element, charge)):
            a[i], b[i], c[i] = _coefficients(str(sym), int(q), self.options.use_charge)
        return GaussianCoefficients(a, b, c)
