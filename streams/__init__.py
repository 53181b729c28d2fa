"""The streaming shell around :mod:`detector`, laid out by who uses it (README, "Layout"):
:mod:`streams.worker` (the stream-processing worker), :mod:`streams.api` (the SOC HTTP API on
the workers), :mod:`streams.clients` (what an agent runtime or orchestrator imports),
:mod:`streams.cli` (the ``flowbreaker`` command line), :mod:`streams.demo` (the demo and the
simulated agents); at this level, the modules several of them share (settings, topics, topic
ranges, topics followed whole, manifests, model announcements, drill results)."""
