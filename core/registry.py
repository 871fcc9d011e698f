"""Plugin discovery and the component registry.

Plugins are modules named by entry points of the group ``refinekit.plugins``.
Each module's ``refinekit_register(registry)`` hook declares components by
import path; classes are imported only when first used, so listing plugins
stays cheap.

Switches (environment variables, comma-separated entry-point names):

* ``REFINEKIT_PLUGINS_ALLOW`` — load only these plugins;
* ``REFINEKIT_PLUGINS_DENY`` — never load these;
* ``REFINEKIT_DISABLE_PLUGIN_AUTOLOAD=1`` — load nothing unless allowed
  explicitly (env or config), like pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD;
* ``REFINEKIT_TRACE_HOOKS=1`` — print every hook call to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from refinekit.plugin_api import API_VERSION, api_compatible, hookspecs
from refinekit.plugin_api.components import (
    Component, DataPreparer, FcalcEngine, ModelPreparer, Optimizer, Parameterization, Reader,
    Reporter, Scaler, ScatteringTable, Step, Term, WeightScheme, Writer,
)
from refinekit.plugin_api.errors import PluginError
from refinekit.plugin_api.options import parse_options
from refinekit.plugin_api.registry import KINDS

try:  # Python < 3.12 ships an older importlib.metadata API
    from importlib_metadata import entry_points
except ImportError:  # pragma: no cover - depends on the interpreter
    from importlib.metadata import entry_points

GROUP = "refinekit.plugins"

BASES: dict[str, type] = {
    "term": Term, "fcalc": FcalcEngine, "table": ScatteringTable,
    "parameterization": Parameterization, "scaler": Scaler, "optimizer": Optimizer,
    "weight": WeightScheme, "step": Step, "reporter": Reporter,
    "preparer": DataPreparer, "model-preparer": ModelPreparer, "reader": Reader, "writer": Writer,
}


class PluginLoadWarning(UserWarning):
    """A plugin failed to import or declared an incompatible API; others keep working."""


@dataclass
class PluginRecord:
    """One entry point of the group, loaded or not."""

    name: str
    module: str
    distribution: str
    version: str
    enabled: bool = True
    error: str | None = None
    components: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ComponentSpec:
    """A registered component: where it lives and who provided it."""

    kind: str
    name: str
    target: str | type
    plugin: PluginRecord
    description: str = ""
    _cls: type | None = field(default=None, repr=False)

    def load(self) -> type:
        """Import and return the class (cached), checking it fits its kind."""
        if self._cls is None:
            cls = self.target
            if isinstance(cls, str):
                module_name, _, attr = cls.partition(":")
                try:
                    cls = getattr(importlib.import_module(module_name), attr)
                except Exception as exc:
                    raise PluginError(
                        f"{self.kind} '{self.name}' of plugin '{self.plugin.name}' "
                        f"({self.plugin.distribution}) failed to load from {self.target}: "
                        f"{type(exc).__name__}: {exc}") from exc
            base = BASES.get(self.kind)
            if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
                raise PluginError(f"{self.kind} '{self.name}' of plugin '{self.plugin.name}' "
                                  f"is not a subclass of {base.__name__}")
            self._cls = cls
        return self._cls


def _split_env(name: str) -> set[str]:
    return {x.strip() for x in os.environ.get(name, "").split(",") if x.strip()}


class Registry:
    """All discovered plugins and their components."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginRecord] = {}
        self.components: dict[tuple[str, str], ComponentSpec] = {}
        self._current: PluginRecord | None = None
        if os.environ.get("REFINEKIT_TRACE_HOOKS"):
            self.pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[hook] {msg}"))
            self.pm.enable_tracing()

    # ----------------------------------------------------------- discovery
    @classmethod
    def discover(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> "Registry":
        """Load every entry point of ``refinekit.plugins`` that the switches allow."""
        reg = cls()
        allow = set(allow) | _split_env("REFINEKIT_PLUGINS_ALLOW")
        deny = set(deny) | _split_env("REFINEKIT_PLUGINS_DENY")
        autoload = os.environ.get("REFINEKIT_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
        seen: dict[str, Any] = {}
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            previous = seen.get(ep.name)
            if previous is not None:
                if previous.value == ep.value and previous.dist_name == dist:
                    continue  # the same distribution seen twice on sys.path
                raise PluginError(
                    f"two plugins claim the name '{ep.name}': distribution "
                    f"'{previous.dist_name}' ({previous.value}) and '{dist}' ({ep.value}); "
                    f"uninstall one or deny it with REFINEKIT_PLUGINS_DENY")
            seen[ep.name] = _EntryInfo(ep.value, dist)
            version = ep.dist.version if ep.dist is not None else "?"
            record = PluginRecord(ep.name, ep.value, dist, version)
            reg.plugins[ep.name] = record
            wanted = (autoload or ep.name in allow) and ep.name not in deny
            if allow and ep.name not in allow:
                wanted = False
            if not wanted:
                record.enabled = False
                continue
            reg._load_entry_point(record, ep.load)
        return reg

    def _load_entry_point(self, record: PluginRecord, loader) -> None:
        try:
            module = loader()
        except Exception as exc:  # a broken plugin must not break the others
            self._fail(record, f"import failed: {type(exc).__name__}: {exc}")
            return
        self.register_module(module, record)

    def register_module(self, module: Any, record: PluginRecord | str) -> PluginRecord:
        """Register an already-imported plugin module (also used by tests)."""
        if isinstance(record, str):
            record = PluginRecord(record, getattr(module, "__name__", record), "(local)", "")
            if record.name in self.plugins:
                raise PluginError(f"plugin name '{record.name}' is already registered "
                                  f"by '{self.plugins[record.name].distribution}'")
            self.plugins[record.name] = record
        declared = getattr(module, "REFINEKIT_API_VERSION", API_VERSION)
        if not api_compatible(declared):
            self._fail(record, f"built for plugin API {declared}, this kernel provides "
                               f"{API_VERSION}; upgrade the plugin or refinekit")
            return record
        self.pm.register(module, name=record.name)
        others = [p for p in self.pm.get_plugins() if p is not module]
        caller = self.pm.subset_hook_caller("refinekit_register", remove_plugins=others)
        self._current = record
        try:
            caller(registry=self)
        except PluginError:
            raise
        except Exception as exc:
            self.pm.unregister(module)
            for key in record.components:
                self.components.pop(key, None)
            record.components.clear()
            self._fail(record, f"refinekit_register failed: {type(exc).__name__}: {exc}")
        finally:
            self._current = None
        return record

    def _fail(self, record: PluginRecord, message: str) -> None:
        record.error = message
        record.enabled = False
        warnings.warn(f"refinekit plugin '{record.name}' ({record.distribution}) was not "
                      f"loaded: {message}", PluginLoadWarning, stacklevel=3)

    # ----------------------------------------------------------- the hook API
    def add(self, kind: str, name: str, target: str | type, *, description: str = "") -> None:
        """Register a component (called from ``refinekit_register``)."""
        if kind not in KINDS:
            raise PluginError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
        record = self._current or PluginRecord("(direct)", "", "(local)", "")
        key = (kind, name)
        if key in self.components:
            other = self.components[key].plugin
            raise PluginError(
                f"{kind} '{name}' is registered twice: by plugin '{other.name}' "
                f"(distribution '{other.distribution}') and by plugin '{record.name}' "
                f"(distribution '{record.distribution}')")
        self.components[key] = ComponentSpec(kind, name, target, record, description)
        record.components.append(key)

    # ----------------------------------------------------------- lookup
    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind``, sorted."""
        return sorted(n for (k, n) in self.components if k == kind)

    def spec(self, kind: str, name: str) -> ComponentSpec:
        """The spec of (kind, name), or PluginError listing what exists."""
        try:
            return self.components[(kind, name)]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none"
            hint = ""
            for record in self.plugins.values():
                if record.error and name in record.name:
                    hint = f" (plugin '{record.name}' failed to load: {record.error})"
                elif not record.enabled and record.name == name:
                    hint = f" (plugin '{record.name}' is installed but disabled)"
            raise PluginError(f"no {kind} named '{name}' is installed{hint}; "
                              f"available: {available}") from None

    def create(self, kind: str, name: str, options: dict | None = None,
               path: str = "") -> Component:
        """Instantiate a component with validated options."""
        cls = self.spec(kind, name).load()
        opts = parse_options(cls.Options, options or {}, path or f"{kind}.{name}")
        return cls(opts)

    def preset(self, name: str) -> dict:
        """The config dict of a registered preset."""
        target = self.spec("preset", name).target
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            return getattr(importlib.import_module(module_name), attr)
        return target

    def hook(self):
        """The pluggy hook relay (``registry.hook().refinekit_cycle_end(...)``)."""
        return self.pm.hook


@dataclass
class _EntryInfo:
    value: str
    dist_name: str
