"""The example third-party distribution: installed, discovered, configured, conformant."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import gemmi
import pytest

from conftest import ROOT, dataset
from plugin_fixtures import on_path
from refinekit.config import build_config
from refinekit.engine import create_components
from refinekit.plugin_api import AtomModel, ConfigError
from refinekit.plugin_api.testing import check_component_class, check_options, check_term_gradient
from refinekit.registry import Registry


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-install the example (no dependencies) into a private folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target),
                    str(ROOT / "examples" / "third_party_plugin")], check=True)
    return target


def test_discovered_with_its_distribution(installed):
    with on_path(installed):
        reg = Registry.discover()
        rec = reg.plugins["harmonic-example"]
        assert rec.distribution == "refinekit-harmonic-example" and rec.version == "1.2.0"
        assert ("term", "harmonic-reference") in rec.components


def test_listed_by_cli(installed):
    env = {**__import__("os").environ, "PYTHONPATH": str(installed)}
    out = subprocess.run([sys.executable, "-m", "refinekit.cli", "plugins"], env=env,
                         capture_output=True, text=True, check=True)
    row = [line for line in out.stdout.splitlines() if line.startswith("harmonic-reference")]
    assert row and "refinekit-harmonic-example" in row[0] and "1.2.0" in row[0]


def test_configured_from_toml_and_conformant(installed, tmp_path):
    with on_path(installed):
        reg = Registry.discover()
        raw = {"required_plugins": ["refinekit-harmonic-example>=1.0"],
               "terms": {"ls": {}, "restrain": {"component": "harmonic-reference", "weight": 0.5,
                                                "options": {"selection": "CA", "sigma": 0.2}}}}
        from refinekit.config import check_required_plugins

        cfg = build_config(raw, reg)
        check_required_plugins(cfg.required_plugins)
        parts = create_components(reg, cfg)
        term = parts.terms["restrain"]
        assert parts.weights["restrain"] == 0.5 and term.options.sigma == 0.2
        cls = type(term)
        check_component_class(cls)
        check_options(cls)
        bad = build_config({"terms": {"r": {"component": "harmonic-reference",
                                            "options": {"sigma": "wide"}}}}, reg)
        with pytest.raises(ConfigError, match=r"terms\.r\.options\.sigma"):
            create_components(reg, bad)

        model = AtomModel.from_structure(gemmi.read_structure(str(dataset("5e5z", "5e5z.pdb"))))
        term.setup(types.SimpleNamespace(model=model))
        model.xyz[term.indices] += 0.05
        model.mark_changed()
        report = check_term_gradient(term, model, fields=("xyz",))
        assert report.ok, report
