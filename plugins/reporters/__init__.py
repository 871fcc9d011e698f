"""Run reporters: plain log lines and a terminal progress bar (entry point ``reporters``)."""

from refinekit.plugin_api import hookimpl

REFINEKIT_API_VERSION = "1.0"


@hookimpl
def refinekit_register(registry):
    registry.add("reporter", "log", "refinekit.plugins.reporters.log:LogReporter",
                 description="one plain line of figures per macro-cycle")
    registry.add("reporter", "progress", "refinekit.plugins.reporters.progress:ProgressReporter",
                 description="progress bar on a terminal, plain lines otherwise")
