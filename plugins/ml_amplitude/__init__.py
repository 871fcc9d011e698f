"""Maximum-likelihood amplitude target (Read 1986; Pannu & Read 1996; Murshudov et al. 1997).

Entry point ``ml-amplitude``; registers the term ``ml-amplitude``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("term", "ml-amplitude", "refinekit.plugins.ml_amplitude.ml_amplitude:MLAmplitude",
                 description="ML amplitude target (Rice/Woolfson, sigmaA per shell fitted on the free set)")
