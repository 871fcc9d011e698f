"""Maximum-likelihood intensity target (Rice law integrated over the intensity error).

Entry point ``ml-intensity``; registers the term ``ml-intensity``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("term", "ml-intensity", "refinekit.plugins.ml_intensity.ml_intensity:MLIntensity",
                 description="ML intensity target (exact 1-D integral over the measurement error, sigmaA per shell)")
