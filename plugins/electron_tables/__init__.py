"""Electron scattering factors (entry point ``electron-tables``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("table", "electron", "refinekit.plugins.electron_tables.table:ElectronTable",
                 description="electron scattering factors, 5-Gaussian fits (Peng 1996; ITC Vol C 4.3.2.2)")
