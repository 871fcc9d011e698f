"""refinekit — a plugin kernel for macromolecular refinement.

The kernel (this package) holds no physics: it discovers plugins, validates
configs, composes the weighted target and drives optimizers through
macro-cycles.  The contract lives in :mod:`refinekit.plugin_api`; features
live in ``refinekit.plugins.*``.
"""

__version__ = "0.1.0"
