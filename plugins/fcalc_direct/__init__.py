"""Structure factors by exact direct summation (entry point ``fcalc-direct``).

Registers the Fcalc engine ``direct`` (the accuracy reference; O(N·M·|G|)).
numba is imported only when the engine is used.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("fcalc", "direct", "refinekit.plugins.fcalc_direct.engine:DirectFcalc",
                 description="Fcalc by exact summation over atoms and symmetry operations (reference)")
