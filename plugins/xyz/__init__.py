"""Cartesian coordinates as parameters (entry point ``xyz``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("parameterization", "xyz", "refinekit.plugins.xyz.param:XyzParameters",
                 description="x, y, z (Å) of selected atoms")
