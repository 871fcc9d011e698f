"""Helpers that fabricate installed distributions (dist-info + module) in a folder."""

from __future__ import annotations

import sys
from pathlib import Path

GOOD_MODULE = '''
from refinekit.plugin_api import hookimpl
REFINEKIT_API_VERSION = "{api}"

@hookimpl
def refinekit_register(registry):
    registry.add("term", "{term}", "refinekit.plugins.ls.target:LeastSquaresTarget")
'''


def fake_distribution(root: Path, dist: str, entry_name: str, module: str, source: str,
                      version: str = "1.0") -> None:
    """Write ``module.py`` and a dist-info declaring entry point ``entry_name`` → ``module``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[refinekit.plugins]\n{entry_name} = {module}\n")


class on_path:
    """Context manager putting a folder first on sys.path."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __enter__(self):
        sys.path.insert(0, self.folder)
        return self

    def __exit__(self, *exc):
        sys.path.remove(self.folder)
        for name in list(sys.modules):
            mod = sys.modules[name]
            if getattr(mod, "__file__", None) and str(mod.__file__).startswith(self.folder):
                del sys.modules[name]
