"""A progress bar over macro-cycles on a terminal; plain log lines elsewhere."""

from __future__ import annotations

import sys

from refinekit.plugin_api import Reporter

from .log import LogReporter


class ProgressReporter(Reporter):
    """rich progress bar (cycle i/N, latest R-work/R-free) when stdout is a terminal.

    Off a terminal (logs, CI, pipes) it behaves exactly like ``log``: one
    plain line per cycle, no control characters.
    """

    name = "progress"

    def __init__(self, options=None):
        super().__init__(options)
        self.plain = LogReporter()
        self.bar = None

    def start(self, context) -> None:
        if not sys.stdout.isatty():
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        total = sum(stage.cycles for stage in context.config.stages)
        self.bar = Progress(TextColumn("[bold]refine"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.description}"), TimeElapsedColumn())
        self.task = self.bar.add_task("", total=total)
        self.bar.start()

    def cycle_end(self, context, stats) -> None:
        if self.bar is None:
            self.plain.cycle_end(context, stats)
            return
        if stats.get("cycle", 0) == 0:
            return
        figures = " ".join(f"{k}={stats[k]:.4f}" for k in ("r_work", "r_free", "cc_mask") if k in stats)
        self.bar.update(self.task, advance=1, description=f"[{stats.get('stage', '')}] {figures}")

    def finish(self, context, summary) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.plain.finish(context, summary)
