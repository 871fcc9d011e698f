"""scipy's L-BFGS-B with bounds (entry point ``lbfgs``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("optimizer", "lbfgs", "refinekit.plugins.lbfgs.optimizer:Lbfgs",
                 description="limited-memory BFGS with box bounds (scipy L-BFGS-B)")
