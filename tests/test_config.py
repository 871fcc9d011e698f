"""Config validation: unknown keys and wrong types name the key path."""

from __future__ import annotations

import pytest

from refinekit.config import build_config, check_required_plugins, deep_merge, read_toml
from refinekit.engine import create_components
from refinekit.plugin_api import ConfigError, InputError, PluginError
from refinekit.plugin_api.testing import check_component_class, check_options
from refinekit.registry import BASES, Registry


@pytest.fixture(scope="module")
def registry():
    return Registry.discover()


def test_preset_merges_and_validates(registry):
    cfg = build_config({"preset": "rigid-then-xyzb", "terms": {"ls": {"weight": 2.0}}}, registry)
    assert [s.name for s in cfg.stages] == ["rigid", "xyzb"]
    assert cfg.term_sections()["ls"].weight == 2.0
    create_components(registry, cfg)


@pytest.mark.parametrize("raw, path", [
    ({"fcalcc": {}}, "fcalcc"),
    ({"fcalc": {"engin": "fft"}}, "fcalc.engin"),
    ({"terms": {"ls": {"wieght": 1}}}, "terms.ls.wieght"),
    ({"terms": {"ls": {"weight": "heavy"}}}, "terms.ls.weight"),
    ({"data": {"d_min": "2A"}}, "data.d_min"),
    ({"stages": [{"cycles": "three"}]}, "stages[0].cycles"),
    ({"output": {"pdb": 1}}, "output.pdb"),
])
def test_bad_keys_and_types_named(registry, raw, path):
    with pytest.raises(ConfigError) as err:
        build_config(raw, registry)
    assert f"'{path}'" in str(err.value)


def test_component_options_validated_with_path(registry):
    cfg = build_config({"terms": {"ls": {"options": {"weighting": "cubic"}}}}, registry)
    with pytest.raises(ConfigError, match=r"terms\.ls\.options\.weighting"):
        create_components(registry, cfg)
    cfg = build_config({"stages": [{"steps": [{"step": "minimize", "parameters": ["xyz"],
                                               "maxiter": 3}]}]}, registry)
    with pytest.raises(ConfigError, match=r"stages\[0\]\.steps\[0\]\.maxiter"):
        create_components(registry, cfg)


def test_unknown_component_names_what_exists(registry):
    cfg = build_config({"terms": {"ml-magic": {}}}, registry)
    with pytest.raises(PluginError, match=r"no term named 'ml-magic'.*available:.*ls"):
        create_components(registry, cfg)
    with pytest.raises(ConfigError, match="no preset named 'nope'"):
        build_config({"preset": "nope"}, registry)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[terms.ls]\nweight = = 2\n")
    with pytest.raises(InputError, match=r"bad\.toml.*line 2"):
        read_toml(bad)
    with pytest.raises(InputError, match="not found"):
        read_toml(tmp_path / "missing.toml")


def test_required_plugins_checked():
    check_required_plugins(["refinekit>=0.1"])
    with pytest.raises(PluginError, match="refinekit>=99"):
        check_required_plugins(["refinekit>=99"])
    with pytest.raises(PluginError, match="not installed"):
        check_required_plugins(["no-such-distribution-xyz>=1"])
    with pytest.raises(ConfigError, match=r"required_plugins\[0\]"):
        check_required_plugins(["!!bad"])


def test_deep_merge():
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]}) == \
        {"a": {"b": 1, "c": 3}, "l": [2]}


def test_every_registered_component_meets_the_contract(registry):
    for (kind, name), spec in registry.components.items():
        if kind == "preset":
            build_config({"preset": name}, registry)
            continue
        cls = spec.load()
        assert issubclass(cls, BASES[kind])
        check_component_class(cls)
        check_options(cls)


def test_validate_command(tmp_path, capsys):
    from refinekit.cli import main

    good = tmp_path / "good.toml"
    good.write_text('preset = "rigid-then-xyzb"\n[terms.ls]\nweight = 2.0\n')
    assert main(["validate", str(good)]) == 0
    assert "valid (preset 'rigid-then-xyzb', 2 stage(s))" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stages]]\nsteps = [{ step = "minimize", parameters = ["xyz"], max_iters = 3 }]\n')
    assert main(["validate", str(bad)]) == 2
    assert "stages[0].steps[0].max_iters" in capsys.readouterr().err
