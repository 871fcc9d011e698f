"""MTZ reflection files through gemmi (entry point ``mtz-io``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("reader", "mtz", "refinekit.plugins.mtz_io.mtz:MtzReader",
                 description="read amplitudes/intensities, σ and free-R flags from MTZ")
    registry.add("writer", "mtz", "refinekit.plugins.mtz_io.mtz:MtzWriter",
                 description="write reflection columns (FC/PHIC, map coefficients) to MTZ")
