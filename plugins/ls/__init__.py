"""Least-squares amplitude target with an overall scale (entry point ``ls``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("term", "ls", "refinekit.plugins.ls.target:LeastSquaresTarget",
                 description="Σ w(|Fo| − k|Fmodel|)² / Σ w|Fo|², optimal overall scale k")
