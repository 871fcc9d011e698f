"""Structure factors by FFT of B_add-blurred atomic densities (entry point ``fcalc-fft``).

Registers the Fcalc engine ``fft``.  Heavy modules (numba, pyFFTW) are
imported only when the engine is used.
"""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("fcalc", "fft", "refinekit.plugins.fcalc_fft.engine:FftFcalc",
                 description="Fcalc by FFT of atomic densities (B_add trick) with adjoint-FFT gradients")
