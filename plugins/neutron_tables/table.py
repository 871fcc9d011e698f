"""Neutron bound coherent scattering lengths.

Neutrons scatter from nuclei: the scattering length b_coh does not fall off
with s, so f(s) = b_coh is a constant (the atom's B still blurs it).  Values
in fm from Sears (1992) Neutron News 3(3), 26 (as gemmi ships them,
``Element.neutron92``).  Hydrogen is negative (−3.739 fm) and deuterium
positive (+6.671 fm): name deuterium atoms with element D.
"""

from __future__ import annotations

from functools import lru_cache

import gemmi
import numpy as np

from refinekit.plugin_api import GaussianCoefficients, InputError, ScatteringTable


@lru_cache(maxsize=None)
def _length(symbol: str) -> float:
    element = gemmi.Element(symbol)
    coef = element.neutron92 if element.atomic_number else None
    if coef is None:
        raise InputError(f"no neutron scattering length for element {symbol!r}")
    return float(coef.get_coefs()[0])


class NeutronTable(ScatteringTable):
    """Coherent neutron scattering lengths (fm), constant in s."""

    name = "neutron"
    radiation = "neutron"

    def coefficients(self, element, charge) -> GaussianCoefficients:
        n = len(element)
        c = np.array([_length(str(sym)) for sym in element])
        return GaussianCoefficients(np.zeros((n, 1)), np.ones((n, 1)), c)
