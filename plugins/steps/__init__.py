"""Generic macro-cycle steps: ``minimize`` and ``scale`` (entry point ``steps``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("step", "minimize", "refinekit.plugins.steps.steps:Minimize",
                 description="minimise the weighted terms over named parameterizations")
    registry.add("step", "scale", "refinekit.plugins.steps.steps:Scale",
                 description="run the named scalers (alternating rounds)")
