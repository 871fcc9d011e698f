"""Built-in protocol presets (entry point ``presets``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("preset", "default", "refinekit.plugins.presets.library:DEFAULT",
                 description="LS target; each cycle: xyz then B")
    registry.add("preset", "rigid-then-xyzb", "refinekit.plugins.presets.library:RIGID_THEN_XYZB",
                 description="LS rigid body at low resolution, then xyz + B at full resolution")
    registry.add("preset", "xray", "refinekit.plugins.presets.library:XRAY",
                 description="ML + geometry; each cycle: scale, weight, xyz, B (REFMAC/servalcat-like)")
    registry.add("preset", "cryo-em", "refinekit.plugins.presets.library:CRYO_EM",
                 description="real space: map-value + geometry, segment weight search, xyz (phenix.real_space_refine-like)")
