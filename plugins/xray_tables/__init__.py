"""X-ray form factors (International Tables Vol. C 6.1.1.4, the IT92 Gaussians).

Entry point ``xray-tables``; registers the table ``xray``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("table", "xray", "refinekit.plugins.xray_tables.table:XrayTable",
                 description="X-ray form factors, IT92 4-Gaussian + constant (gemmi's coefficients)")
