"""Flat bulk-solvent model (mask or Babinet) fitted between minimisations.

Entry point ``bulk-solvent``; registers the scaler ``bulk-solvent``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("scaler", "bulk-solvent", "refinekit.plugins.bulk_solvent.scaler:BulkSolventScaler",
                 description="flat bulk solvent k_sol·exp(-B_sol s²/4)·F_mask (Jiang & Brünger mask) "
                             "or Babinet; grid search + local LSQ (Fokine & Urzhumtsev 2002)")
