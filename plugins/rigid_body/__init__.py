"""Rigid-body groups: rotation about the group centre + translation (entry point ``rigid-body``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("parameterization", "rigid-body", "refinekit.plugins.rigid_body.param:RigidBody",
                 description="6 parameters per group: rotation (rad) about the centre, translation (Å)")
