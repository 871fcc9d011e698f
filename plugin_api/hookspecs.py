"""pluggy hook specifications (project name ``refinekit``).

The hook set is small on purpose; components carry the behaviour.
An entry-point module of the group ``refinekit.plugins`` implements any of
these with ``@hookimpl``.  It should import nothing heavy at module level:
register components by import path (``"pkg.module:Class"``) so that
``refinekit plugins`` can list them without loading numba kernels.
"""

from __future__ import annotations

import pluggy

PROJECT = "refinekit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def refinekit_register(registry) -> None:
    """Declare components: ``registry.add(kind, name, "pkg.mod:Class")``.

    ``registry`` follows :class:`refinekit.plugin_api.registry.Registry`.
    """


@hookspec
def refinekit_add_cli_arguments(command: str, parser) -> None:
    """Add options to the argparse ``parser`` of CLI sub-command ``command``."""


@hookspec
def refinekit_configure(config: dict) -> None:
    """Inspect or adjust the parsed run configuration (a plain dict) before a run."""


@hookspec
def refinekit_cycle_end(context, stats: dict) -> None:
    """Observe the statistics of a finished macro-cycle."""
