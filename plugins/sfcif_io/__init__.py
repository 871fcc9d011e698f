"""PDBx/mmCIF structure-factor files (``*-sf.cif``) through gemmi.

Entry point ``sf-mmcif``; registers the reader ``sf-mmcif``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("reader", "sf-mmcif", "refinekit.plugins.sfcif_io.sfcif:SfCifReader",
                 description="read F/I, sigmas, status free flags, cell and space group from sf-mmCIF")
