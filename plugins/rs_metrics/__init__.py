"""Real-space model-to-map correlations: step ``rs-metrics`` (CC_mask, CC_box).

Entry point ``rs-metrics``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("step", "rs-metrics", "refinekit.plugins.rs_metrics.metrics:RealSpaceMetrics",
                 description="CC_mask / CC_box of the model map against the map: overall, per chain, per residue")
