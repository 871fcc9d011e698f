"""L-BFGS-B: limited-memory quasi-Newton with box bounds.

Byrd, Lu, Nocedal & Zhu (1995) SIAM J. Sci. Comput. 16, 1190; Zhu et al.
(1997) ACM TOMS 23, 550 — through ``scipy.optimize.minimize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, minimize

from refinekit.plugin_api import Optimizer, OptimizerResult


@dataclass
class LbfgsOptions:
    """memory: correction pairs kept; ftol/gtol: scipy's stopping tolerances."""

    memory: int = 10
    ftol: float = 1e-10
    gtol: float = 1e-10

    def validate(self) -> None:
        if self.memory < 1:
            raise ValueError("memory must be ≥ 1")


class Lbfgs(Optimizer):
    """Bounded L-BFGS; stops after ``max_iter`` iterations or on convergence."""

    name = "lbfgs"
    Options = LbfgsOptions

    def minimize(self, fun, x0, lower, upper, max_iter) -> OptimizerResult:
        best = {"f": np.inf, "x": np.array(x0, dtype=float)}

        def tracked(x):
            f, g = fun(x)
            if f < best["f"]:
                best["f"], best["x"] = f, x.copy()
            return f, g

        bounds = Bounds(lower, upper) if np.isfinite(np.r_[lower, upper]).any() else None
        res = minimize(tracked, np.asarray(x0, dtype=float), jac=True, method="L-BFGS-B",
                       bounds=bounds,
                       options={"maxiter": max_iter, "maxfun": max(3 * max_iter, 10),
                                "maxcor": self.options.memory, "ftol": self.options.ftol,
                                "gtol": self.options.gtol})
        return OptimizerResult(best["x"], float(best["f"]), int(res.nfev), str(res.message))
