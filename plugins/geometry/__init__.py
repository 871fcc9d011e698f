"""Stereochemical restraints from the CCP4 Monomer Library through gemmi's topology.

Entry point ``geometry``; registers the terms ``geometry`` (bonds, angles,
torsions, chirality, planes, non-bonded repulsion with symmetry contacts) and
``adp-similarity`` (B similarity of covalent neighbours), and the model
preparer ``hydrogens`` (riding hydrogens at ideal positions).
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("term", "geometry", "refinekit.plugins.geometry.term:GeometryRestraint",
                 description="monomer-library geometry restraints (REFMAC-style) with "
                             "symmetry-aware non-bonded repulsion")
    registry.add("term", "adp-similarity", "refinekit.plugins.geometry.term:AdpSimilarity",
                 description="similarity of isotropic B between bonded and 1-3 neighbours")
    registry.add("model-preparer", "hydrogens", "refinekit.plugins.geometry.hydrogens:Hydrogens",
                 description="add (or keep/remove) hydrogens at ideal positions from the library")
    registry.add("step", "place-hydrogens", "refinekit.plugins.geometry.hydrogens:PlaceHydrogens",
                 description="move hydrogens back to ideal positions on the current heavy atoms")
