"""Neutron coherent scattering lengths (entry point ``neutron-tables``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("table", "neutron", "refinekit.plugins.neutron_tables.table:NeutronTable",
                 description="neutron coherent scattering lengths (Sears 1992), H and D distinct")
