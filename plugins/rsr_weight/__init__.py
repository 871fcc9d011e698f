"""Real-space weight search on random model segments (entry point ``rsr-weight``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("weight", "rsr-search", "refinekit.plugins.rsr_weight.search:RsrWeightSearch",
                 description="data weight from trial refinements of random few-residue segments "
                             "(Afonine et al. 2018, phenix.real_space_refine)")
