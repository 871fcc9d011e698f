"""Plugin discovery: listing, broken plugins, duplicates, API versions, switches."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import pytest

from plugin_fixtures import GOOD_MODULE, fake_distribution, on_path
from refinekit.plugin_api import PluginError
from refinekit.registry import PluginLoadWarning, Registry

FIRST_PARTY = {"fcalc-fft", "fcalc-direct", "xray-tables", "ls", "xyz", "b-iso", "rigid-body",
               "lbfgs", "model-io", "mtz-io", "steps", "reporters", "presets"}


def test_first_party_plugins_discovered():
    reg = Registry.discover()
    assert FIRST_PARTY <= set(reg.plugins)
    for name in FIRST_PARTY:
        rec = reg.plugins[name]
        assert rec.enabled and rec.error is None, (name, rec.error)
        assert rec.components, f"plugin {name} registered nothing"
        assert rec.distribution == "refinekit"
    assert reg.names("fcalc") >= ["direct", "fft"]


def test_broken_plugin_warns_by_name_and_rest_works(tmp_path):
    fake_distribution(tmp_path, "broken-dist", "broken-plugin", "broken_mod",
                      "raise ImportError('missing libfoo')\n")
    with on_path(tmp_path):
        with pytest.warns(PluginLoadWarning, match=r"broken-plugin.*broken-dist.*missing libfoo"):
            reg = Registry.discover()
    rec = reg.plugins["broken-plugin"]
    assert not rec.enabled and "ImportError: missing libfoo" in rec.error
    assert reg.create("term", "ls") is not None  # everything else still works
    with pytest.raises(PluginError, match="no term named 'nonexistent'"):
        reg.spec("term", "nonexistent")


def test_broken_plugin_shown_by_cli(tmp_path):
    fake_distribution(tmp_path, "broken-dist", "broken-plugin", "broken_mod",
                      "raise ImportError('missing libfoo')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "refinekit.cli", "plugins"], capture_output=True,
                         text=True, env={**__import__("os").environ, **env})
    assert out.returncode == 0, out.stderr
    assert "broken-plugin" in out.stdout and "missing libfoo" in out.stdout
    assert "fcalc-fft" in out.stdout and "rigid-body" in out.stdout


def test_duplicate_entry_point_names_both_distributions(tmp_path):
    fake_distribution(tmp_path / "a", "dist-one", "same-name", "mod_one", GOOD_MODULE.format(api="1.0", term="t1"))
    fake_distribution(tmp_path / "b", "dist-two", "same-name", "mod_two", GOOD_MODULE.format(api="1.0", term="t2"))
    with on_path(tmp_path / "a"), on_path(tmp_path / "b"):
        with pytest.raises(PluginError, match=r"same-name.*dist-(one|two).*dist-(one|two)"):
            Registry.discover()


def test_duplicate_component_names_both_distributions(tmp_path):
    fake_distribution(tmp_path, "dist-three", "shadow-ls", "mod_three", GOOD_MODULE.format(api="1.0", term="ls"))
    with on_path(tmp_path):
        with pytest.raises(PluginError, match=r"term 'ls' is registered twice.*'refinekit'.*'dist-three'"):
            Registry.discover()


def test_incompatible_api_is_refused_with_name(tmp_path):
    fake_distribution(tmp_path, "future-dist", "future-plugin", "future_mod",
                      GOOD_MODULE.format(api="2.0", term="future-term"))
    with on_path(tmp_path):
        with pytest.warns(PluginLoadWarning, match=r"future-plugin.*plugin API 2.0"):
            reg = Registry.discover()
    assert ("term", "future-term") not in reg.components
    assert reg.plugins["future-plugin"].error


def test_allow_and_deny_switches(monkeypatch):
    reg = Registry.discover(deny=["rigid-body"])
    assert not reg.plugins["rigid-body"].enabled
    assert "rigid-body" not in reg.names("parameterization")
    with pytest.raises(PluginError, match="disabled"):
        reg.spec("parameterization", "rigid-body")
    monkeypatch.setenv("REFINEKIT_PLUGINS_ALLOW", "ls,xyz")
    reg = Registry.discover()
    assert {n for n, r in reg.plugins.items() if r.enabled} == {"ls", "xyz"}
    monkeypatch.delenv("REFINEKIT_PLUGINS_ALLOW")
    monkeypatch.setenv("REFINEKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = Registry.discover(allow=["lbfgs"])
    assert {n for n, r in reg.plugins.items() if r.enabled} == {"lbfgs"}


def test_listing_does_not_import_heavy_modules():
    code = ("import sys; from refinekit.registry import Registry; r = Registry.discover(); "
            "heavy = [m for m in ('numba', 'pyfftw', 'scipy.optimize') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_plugins_command_is_fast():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "refinekit.cli", "plugins"], capture_output=True,
                         text=True, check=True)
    elapsed = time.perf_counter() - start
    assert "xray-tables" in out.stdout
    assert elapsed < 2.0, f"refinekit plugins took {elapsed:.2f} s"


def test_lazy_loading_reports_bad_target():
    reg = Registry.discover()
    reg._current = None
    reg.add("term", "ghost", "refinekit.plugins.no_such_module:Ghost")
    with pytest.raises(PluginError, match="ghost.*failed to load"):
        reg.create("term", "ghost")


def test_no_warnings_for_healthy_install():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        Registry.discover()
