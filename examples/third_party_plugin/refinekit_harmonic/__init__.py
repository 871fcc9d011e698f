"""Entry-point module of the example plugin: declares one restraint lazily."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("term", "harmonic-reference", "refinekit_harmonic.restraint:HarmonicReference",
                 description="harmonic restraint of selected atoms to reference positions")
