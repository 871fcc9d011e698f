"""Automatic data/restraint weighting from the bond rmsd (entry point ``auto-weight``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("weight", "auto", "refinekit.plugins.auto_weight.scheme:AutoWeight",
                 description="scale the data weight each cycle so bond rmsd stays in 0.010–0.020 Å")
