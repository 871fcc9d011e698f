"""The registry interface that ``refinekit_register`` receives."""

from __future__ import annotations

from typing import Protocol

#: Component kinds a plugin may register, with the base class each must subclass.
KINDS = (
    "term", "fcalc", "table", "parameterization", "scaler", "optimizer",
    "weight", "step", "reporter", "preparer", "model-preparer", "reader", "writer", "preset",
)


class Registry(Protocol):
    """What a plugin's ``refinekit_register(registry)`` may call."""

    def add(self, kind: str, name: str, target: str | type, *,
            description: str = "") -> None:
        """Register component ``name`` of ``kind``.

        ``target`` is the class or, better, its import path ``"pkg.mod:Class"``
        (loaded on first use).  For ``kind="preset"`` the target is the
        import path of a module-level dict holding a TOML-shaped config.
        Two distributions registering the same (kind, name) is an error
        naming both.
        """
