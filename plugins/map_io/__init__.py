"""CCP4/MRC density maps: reader and writer ``ccp4`` (MapData ↔ file).

Entry point ``map-io``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("reader", "ccp4", "refinekit.plugins.map_io.ccp4:Ccp4MapReader",
                 description="CCP4/MRC maps → MapData (axis order, origin, boxed or full-cell, optional B sharpening)")
    registry.add("writer", "ccp4", "refinekit.plugins.map_io.ccp4:Ccp4MapWriter",
                 description="MapData → CCP4 mode-2 map, written atomically")
