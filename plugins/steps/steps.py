"""The two generic steps every protocol is built from."""

from __future__ import annotations

from dataclasses import dataclass, field

from refinekit.plugin_api import Step


@dataclass
class MinimizeOptions:
    """parameters: keys of [parameters.*]; terms: keys of [terms.*] ([] = all);
    max_iter: optimizer iterations."""

    parameters: list[str] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)
    max_iter: int = 30

    def validate(self) -> None:
        if not self.parameters:
            raise ValueError("a minimize step needs parameters = [...]")
        if self.max_iter < 1:
            raise ValueError("max_iter must be ≥ 1")


class Minimize(Step):
    """Minimise Σ w_i T_i over the named parameterizations (one optimizer run)."""

    name = "minimize"
    Options = MinimizeOptions
    example_options = {"parameters": ["xyz"]}

    def run(self, context) -> dict:
        figures = context.minimize(self.options.parameters, self.options.terms or None,
                                   self.options.max_iter)
        tag = "+".join(self.options.parameters)
        return {f"{tag}_{k}": v for k, v in figures.items()}


@dataclass
class ScaleOptions:
    """scalers: keys of [scalers.*], run in order; rounds: repetitions of the sequence."""

    scalers: list[str] = field(default_factory=list)
    rounds: int = 2

    def validate(self) -> None:
        if not self.scalers:
            raise ValueError("a scale step needs scalers = [...]")
        if self.rounds < 1:
            raise ValueError("rounds must be ≥ 1")


class Scale(Step):
    """Refit nuisance parameters by running scalers alternately."""

    name = "scale"
    Options = ScaleOptions
    example_options = {"scalers": ["bulk-solvent"]}

    def run(self, context) -> dict:
        figures: dict = {}
        for _ in range(self.options.rounds):
            for name in self.options.scalers:
                figures.update(context.scaler(name).fit(context))
        return figures
