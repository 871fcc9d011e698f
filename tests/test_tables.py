"""Scattering tables against gemmi's own evaluation of the same published fits."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from refinekit.plugin_api import InputError
from refinekit.plugins.electron_tables.table import ElectronTable
from refinekit.plugins.neutron_tables.table import NeutronTable
from refinekit.plugins.xray_tables.table import XrayOptions, XrayTable

ELEMENTS = ["H", "C", "N", "O", "S", "P", "Ca", "Zn", "Xe", "Fe"]
S2 = np.array([0.0, 0.05, 0.25, 1.0, 4.0])  # s² = 1/d², Å⁻²


def test_xray_matches_it92():
    f = XrayTable().coefficients(ELEMENTS, [0] * len(ELEMENTS)).evaluate(S2)
    for i, sym in enumerate(ELEMENTS):
        ref = [gemmi.Element(sym).it92.calculate_sf(s2 / 4) for s2 in S2]
        assert np.allclose(f[i], ref, rtol=1e-6), sym
    assert np.isclose(f[1, 0], 6.0, atol=0.01)  # carbon: 6 electrons at s = 0


def test_xray_ions_use_charge_when_asked():
    with_charge = XrayTable().coefficients(["Fe"], [3]).evaluate(np.array([0.0]))[0, 0]
    neutral = XrayTable(XrayOptions(use_charge=False)).coefficients(["Fe"], [3]).evaluate(np.array([0.0]))[0, 0]
    assert np.isclose(with_charge, 23.0, atol=0.05) and np.isclose(neutral, 26.0, atol=0.05)


def test_electron_matches_peng():
    f = ElectronTable().coefficients(ELEMENTS, [0] * len(ELEMENTS)).evaluate(S2)
    for i, sym in enumerate(ELEMENTS):
        ref = [gemmi.Element(sym).c4322.calculate_sf(s2 / 4) for s2 in S2]
        assert np.allclose(f[i], ref, rtol=1e-6), sym
    # electron factors fall off faster than X-ray ones relative to s = 0
    assert f[1, 3] / f[1, 0] < 0.5


def test_neutron_lengths_h_vs_d():
    f = NeutronTable().coefficients(["H", "D", "C", "O"], [0] * 4).evaluate(S2)
    assert np.allclose(f[0], -3.739) and np.allclose(f[1], 6.671)
    assert np.allclose(f[2], 6.646, atol=1e-3) and np.allclose(f[3], 5.803, atol=1e-3)
    assert np.ptp(f, axis=1).max() == 0.0  # no fall-off with resolution


@pytest.mark.parametrize("table", [XrayTable(), ElectronTable(), NeutronTable()])
def test_unknown_element_named(table):
    with pytest.raises(InputError, match="'X'"):
        table.coefficients(["C", "X"], [0, 0])


@pytest.mark.parametrize("method, expected", [("NEUTRON DIFFRACTION", "neutron"),
                                              ("ELECTRON CRYSTALLOGRAPHY", "electron"),
                                              ("X-RAY DIFFRACTION", "xray"), ("", "xray")])
def test_auto_table_follows_experiment_method(method, expected):
    from conftest import dataset
    from refinekit.engine import choose_table
    from refinekit.plugin_api import AtomModel
    from refinekit.registry import Registry

    st = gemmi.read_structure(str(dataset("5e5z", "5e5z.pdb")))
    st.info["_exptl.method"] = method
    lines = []
    assert choose_table(Registry.discover(), AtomModel.from_structure(st), lines.append) == expected
    assert expected in lines[0]
