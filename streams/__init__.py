"""The streaming shell around :mod:`detector`, laid out by who uses it (README, "Layout"):
the worker and the modules several rooms share at this level; :mod:`streams.api` (the SOC HTTP
API on the workers), :mod:`streams.clients` (what an agent runtime or orchestrator imports),
:mod:`streams.cli` (the ``flowbreaker`` command line), :mod:`streams.demo` (the demo and the
simulated agents)."""
