"""A detection benchmark built from public agent datasets (see ``bench/public/README.md``).

``python -m bench.public.build --sources DIR --out DIR`` turns tool calls from
tau-bench, BFCL, InjecAgent and Agent Security Bench into contract events
(section 1) with a ``flowbreaker-labels/1`` labels file. The converters are
importable one module per source (:mod:`bench.public.tau`, :mod:`bench.public.bfcl`,
:mod:`bench.public.injecagent`, :mod:`bench.public.asb`); :mod:`bench.public.rules`
is the rule baseline scored beside the detector.
"""
