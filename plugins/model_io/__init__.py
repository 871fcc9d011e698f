"""mmCIF and PDB model files through gemmi (entry point ``model-io``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("reader", "model", "refinekit.plugins.model_io.formats:ModelReader",
                 description="read mmCIF/PDB coordinates (gemmi)")
    registry.add("writer", "mmcif", "refinekit.plugins.model_io.formats:MmcifWriter",
                 description="write mmCIF coordinates")
    registry.add("writer", "pdb", "refinekit.plugins.model_io.formats:PdbWriter",
                 description="write PDB coordinates when the model fits the format")
