"""Overall anisotropic scale with crystal-system constraints.

Entry point ``aniso-scale``; registers the scaler ``aniso-scale``.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("scaler", "aniso-scale", "refinekit.plugins.aniso_scale.scaler:AnisoScaler",
                 description="k_overall·exp(-hᵀβh), β invariant under the point group; "
                             "LSQ in |F| (log-linear start, Levenberg–Marquardt) on the work set")
