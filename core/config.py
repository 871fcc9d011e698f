"""Run configuration: TOML → validated dataclasses.

A config is a preset (registered by a plugin) deep-merged with the user's
TOML file and command-line overrides.  Every key is checked: an unknown key
or a wrong type is a ConfigError naming the key path.  Component options
(``terms.<name>.options``, a step's keys, ...) are validated by the
component's own ``Options`` dataclass when the component is created.

Example::

    preset = "ls-basic"
    [fcalc]
    engine = "fft"            # or "direct"
    [terms.ls]
    weight = 1.0
    [[stages]]
    name = "rigid"
    cycles = 3
    d_min = 3.0
    steps = [{ step = "minimize", parameters = ["rigid-body"], max_iter = 40 }]
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from refinekit.plugin_api.errors import ConfigError, InputError, PluginError
from refinekit.plugin_api.options import parse_options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class PluginsSection:
    """Entry-point names to allow (empty = all) or deny."""

    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)


@dataclass
class DataSection:
    """Which columns to use and how to prepare the data.

    Column labels are chosen automatically when empty (an F column followed
    by its σ, else an intensity column followed by its σ).  Resolution limits
    in Å.  ``prepare`` names data preparers run once after reading;
    ``prepare_options`` maps a preparer name to its options table.
    ``resolution`` (Å) is the resolution of a map for real-space jobs
    (``--resolution`` on the command line takes precedence).
    ``free_convention``: "auto", "ccp4" (0 = test set), "phenix"
    (1 = test set) or "mmcif" (status 'f'); see
    :func:`refinekit.plugin_api.numerics.reflections.interpret_free_flags`.
    """

    f: str = ""
    sigf: str = ""
    i: str = ""
    sigi: str = ""
    free: str = ""
    free_convention: Literal["auto", "ccp4", "phenix", "mmcif"] = "auto"
    d_min: float | None = None
    d_max: float | None = None
    prepare: list[str] = field(default_factory=list)
    prepare_options: dict = field(default_factory=dict)
    resolution: float | None = None


@dataclass
class ModelSection:
    """How to prepare the atomic model: ``prepare`` names model preparers run
    once after reading (e.g. ``"hydrogens"``); ``prepare_options`` maps a
    preparer name to its options table."""

    prepare: list[str] = field(default_factory=list)
    prepare_options: dict = field(default_factory=dict)


@dataclass
class FcalcSection:
    """Structure-factor engine and scattering table (component names).

    ``table = "auto"`` picks the table whose radiation matches the model
    file's experiment method (_exptl.method / EXPDTA), X-ray otherwise.
    """

    engine: str = "fft"
    table: str = "auto"
    options: dict = field(default_factory=dict)
    table_options: dict = field(default_factory=dict)


@dataclass
class ChoiceSection:
    """A component chosen by name with its options."""

    name: str = ""
    options: dict = field(default_factory=dict)


@dataclass
class TermSection:
    """One term of the target: component name (default: the table key), weight, options."""

    component: str = ""
    weight: float = 1.0
    enabled: bool = True
    options: dict = field(default_factory=dict)


@dataclass
class NamedSection:
    """A parameterization or scaler: component name (default: the table key) and options."""

    component: str = ""
    options: dict = field(default_factory=dict)


@dataclass
class StageSection:
    """A block of macro-cycles with one list of steps and a resolution range (Å)."""

    name: str = "refine"
    cycles: int = 5
    d_min: float | None = None
    d_max: float | None = None
    steps: list[dict] = field(default_factory=list)

    def validate(self) -> None:
        if self.cycles < 0:
            raise ValueError("cycles must be ≥ 0")
        for i, step in enumerate(self.steps):
            if not isinstance(step, dict) or not isinstance(step.get("step"), str):
                raise ValueError(f"steps[{i}] must be a table with a string key 'step'")


@dataclass
class OutputSection:
    """Which optional outputs to write beside refined.cif and stats.json."""

    pdb: bool = True
    mtz: bool = True
    checkpoint: bool = True


@dataclass
class RunConfig:
    """The whole validated run configuration."""

    preset: str = ""
    description: str = ""
    required_plugins: list[str] = field(default_factory=list)
    plugins: PluginsSection = field(default_factory=PluginsSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    fcalc: FcalcSection = field(default_factory=FcalcSection)
    optimizer: ChoiceSection = field(default_factory=lambda: ChoiceSection("lbfgs"))
    weights: ChoiceSection = field(default_factory=ChoiceSection)
    terms: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    scalers: dict = field(default_factory=dict)
    reporters: list[str] = field(default_factory=lambda: ["log"])
    initial_steps: list[dict] = field(default_factory=list)
    stages: list[StageSection] = field(default_factory=list)
    output: OutputSection = field(default_factory=OutputSection)

    def validate(self) -> None:
        StageSection(name="initial_steps", steps=self.initial_steps).validate()

    def term_sections(self) -> dict[str, TermSection]:
        """Parsed [terms.*] tables."""
        return {k: parse_options(TermSection, v, f"terms.{k}") for k, v in self.terms.items()}

    def parameter_sections(self) -> dict[str, NamedSection]:
        """Parsed [parameters.*] tables."""
        return {k: parse_options(NamedSection, v, f"parameters.{k}") for k, v in self.parameters.items()}

    def scaler_sections(self) -> dict[str, NamedSection]:
        """Parsed [scalers.*] tables."""
        return {k: parse_options(NamedSection, v, f"scalers.{k}") for k, v in self.scalers.items()}


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file; errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError("config file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config file: {exc}", str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid TOML: {exc}", str(path)) from None


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; tables merge, other values replace."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(raw: dict, registry=None, default_preset: str = "") -> RunConfig:
    """Merge the named preset (or ``default_preset``) under ``raw`` and validate."""
    name = raw.get("preset", default_preset)
    if name:
        if not isinstance(name, str):
            raise ConfigError(f"expected a string, got {name!r}", "preset")
        if registry is None:
            raise ConfigError("presets need the plugin registry", "preset")
        try:
            preset = registry.preset(name)
        except PluginError as exc:
            raise ConfigError(str(exc), "preset") from None
        raw = deep_merge(preset, raw)
        raw["preset"] = name
    config = parse_options(RunConfig, raw)
    config.term_sections()
    config.parameter_sections()
    config.scaler_sections()
    return config


def check_required_plugins(requirements: list[str]) -> None:
    """Check ``required_plugins`` entries such as ``"my-restraints>=1.2"`` against installed versions."""
    if not requirements:
        return
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        from importlib_metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        from importlib.metadata import PackageNotFoundError, version
    for i, text in enumerate(requirements):
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise ConfigError(f"not a requirement: {exc}", f"required_plugins[{i}]") from None
        try:
            have = version(req.name)
        except PackageNotFoundError:
            raise PluginError(f"the config requires '{text}' but distribution '{req.name}' "
                              f"is not installed") from None
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            raise PluginError(f"the config requires '{text}' but {req.name} {have} is installed")

