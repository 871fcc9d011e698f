"""Isotropic B factors as parameters (entry point ``b-iso``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("parameterization", "b-iso", "refinekit.plugins.b_iso.param:BIsoParameters",
                 description="isotropic B (Å²) of selected atoms, bounded")
