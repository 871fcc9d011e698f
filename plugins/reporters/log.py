"""A reporter writing one plain line per macro-cycle to the run log."""

from __future__ import annotations

from refinekit.plugin_api import Reporter

#: Figures shown when present, in this order, with their format.
SHOWN = (("r_work", "{:.4f}"), ("r_free", "{:.4f}"), ("rmsd_bonds", "{:.4f}"),
         ("rmsd_angles", "{:.2f}"), ("k_sol", "{:.3f}"), ("b_sol", "{:.1f}"),
         ("cc_mask", "{:.4f}"), ("seconds", "{:.1f}s"))


class LogReporter(Reporter):
    """Plain-text cycle lines, e.g. ``cycle 3 [xyzb] r_work=0.2012 r_free=0.2333 1.2s``."""

    name = "log"

    def cycle_end(self, context, stats) -> None:
        parts = [f"cycle {stats.get('cycle', '?'):>3} [{stats.get('stage', '')}]"]
        for key, fmt in SHOWN:
            if key in stats and stats[key] is not None:
                parts.append(f"{key}={fmt.format(stats[key])}")
        context.log(" ".join(parts))

    def finish(self, context, summary) -> None:
        final = summary["final"]
        shown = " ".join(f"{k}={fmt.format(final[k])}" for k, fmt in SHOWN if k in final)
        context.log(f"final {shown}")
