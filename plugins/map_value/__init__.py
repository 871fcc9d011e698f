"""Real-space target ``map-value``: −Σ w·ρ(atom centre), tricubic interpolation.

Entry point ``map-value`` (Afonine et al. 2018, Acta Cryst. D74, 531).
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("term", "map-value", "refinekit.plugins.map_value.term:MapValueTerm",
                 description="real-space target −Σ w_m ρ(r_m), tricubic interpolation with analytic gradient")
