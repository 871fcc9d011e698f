"""refinekit.plugin_api — the stable contract between the kernel and plugins.

Third-party packages depend on this package only.  See ``docs/plugins.md``.

API_VERSION follows "MAJOR.MINOR": a plugin declaring ``REFINEKIT_API_VERSION``
in its entry-point module is loaded when MAJOR equals the kernel's and its
MINOR is not newer than the kernel's.
"""

from __future__ import annotations

from .components import (
    Component, Context, DataPreparer, DataTarget, ModelPreparer, FcalcEngine, FTarget, FTargetResult,
    GaussianCoefficients, NoOptions, Optimizer, OptimizerResult,
    Parameterization, Reader, Reporter, Restraint, Scaler, ScatteringTable,
    Step, Term, TermResult, WeightScheme, Writer,
)
from .errors import ConfigError, InputError, PluginError, RefinekitError
from .gradient import FIELD_SHAPES, AtomGradient
from .hookspecs import hookimpl
from .model import AtomModel, MapData, ReflectionColumns, ReflectionData, d_spacings
from .options import parse_options

API_VERSION = "1.0"


def api_compatible(declared: str, kernel: str = API_VERSION) -> bool:
    """True when a plugin built for ``declared`` can run on ``kernel``."""
    try:
        dmaj, dmin = (int(x) for x in str(declared).split(".")[:2])
        kmaj, kmin = (int(x) for x in kernel.split(".")[:2])
    except ValueError:
        return False
    return dmaj == kmaj and dmin <= kmin


__all__ = [
    "API_VERSION", "api_compatible", "hookimpl", "AtomGradient", "FIELD_SHAPES",
    "AtomModel", "ReflectionData", "ReflectionColumns", "MapData", "d_spacings", "parse_options",
    "RefinekitError", "ConfigError", "InputError", "PluginError",
    "Component", "Context", "NoOptions", "Term", "TermResult", "DataTarget",
    "Restraint", "FTarget", "FTargetResult", "FcalcEngine",
    "GaussianCoefficients", "ScatteringTable", "Parameterization", "Scaler",
    "Optimizer", "OptimizerResult", "WeightScheme", "Step", "Reporter", "DataPreparer", "ModelPreparer",
    "Reader", "Writer",
]
