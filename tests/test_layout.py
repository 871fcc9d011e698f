"""The kernel stays a kernel: import rules, packaging and documentation guards."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in a file, including relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                continue  # relative imports stay inside their own package
            found.append((node.lineno, node.module or ""))
    return found


def violations(folder: Path, forbidden) -> list[str]:
    bad = []
    for path in folder.rglob("*.py"):
        for line, module in imported_modules(path):
            if forbidden(path, module):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_core_and_plugin_api_never_import_plugins():
    rule = lambda path, module: module.startswith("refinekit.plugins")  # noqa: E731
    assert violations(ROOT / "core", rule) == []
    assert violations(ROOT / "plugin_api", rule) == []


def test_plugins_never_import_each_other():
    def rule(path, module):
        own = path.relative_to(ROOT / "plugins").parts[0]
        m = re.match(r"refinekit\.plugins\.([a-z0-9_]+)", module)
        return bool(m) and m.group(1) != own
    assert violations(ROOT / "plugins", rule) == []


def test_plugins_do_not_import_the_kernel():
    rule = lambda path, module: re.match(r"refinekit\.(?!plugin_api|plugins)", module) is not None  # noqa: E731
    assert violations(ROOT / "plugins", rule) == []


def test_the_import_checker_catches_violations(tmp_path):
    (tmp_path / "plugins" / "a").mkdir(parents=True)
    bad = tmp_path / "plugins" / "a" / "x.py"
    bad.write_text("from refinekit.plugins.b import thing\nimport refinekit.plugins.a.y\n")
    found = [m for _, m in imported_modules(bad)]
    assert found == ["refinekit.plugins.b", "refinekit.plugins.a.y"]


def test_every_plugin_folder_is_packaged_and_registered():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(meta["tool"]["setuptools"]["packages"])
    entry_modules = set(meta["project"]["entry-points"]["refinekit.plugins"].values())
    for folder in sorted(p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()):
        pkg = f"refinekit.plugins.{folder.name}"
        assert pkg in packages, f"{pkg} missing from [tool.setuptools] packages"
        assert pkg in entry_modules, f"{pkg} has no entry point"


def test_every_entry_point_has_a_docs_page():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in meta["project"]["entry-points"]["refinekit.plugins"]:
        page = ROOT / "docs" / "plugins" / f"{name}.md"
        assert page.exists(), f"plugin {name} has no docs/plugins/{name}.md"
        assert len(page.read_text().strip()) > 200, f"docs/plugins/{name}.md is too thin"


def test_every_hook_is_documented():
    from refinekit.plugin_api import hookspecs

    text = (ROOT / "docs" / "plugins.md").read_text()
    for name in dir(hookspecs):
        if name.startswith("refinekit_"):
            assert name in text, f"hook {name} is not described in docs/plugins.md"
