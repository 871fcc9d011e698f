"""French–Wilson intensities → amplitudes (French & Wilson 1978, Acta Cryst. A34, 517).

Entry point ``french-wilson``; registers the preparer ``french-wilson``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("preparer", "french-wilson", "refinekit.plugins.french_wilson.french_wilson:FrenchWilson",
                 description="Bayesian I → F (French & Wilson 1978) with a binned Wilson prior")
