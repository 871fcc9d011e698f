"""Real-space target ``map-cc``: −CC(ρ_obs, ρ_model) in a mask around the model.

Entry point ``map-cc``; ρ_model comes from the run's Fcalc engine (P1 box).
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("term", "map-cc", "refinekit.plugins.map_cc.term:MapCCTerm",
                 description="real-space target −CC(map, model map at the map resolution) inside a mask")
