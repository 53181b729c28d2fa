"""The ``flowbreaker`` command line: :mod:`.main` wires the sub-commands (the ``flowbreaker``
entry point in pyproject.toml is ``streams.cli.main:main``); each command here is one module
named after it, exposing ``configure_parser(parser)`` and ``run(args) -> int``:

``train``, ``replay``, ``simulate``, ``evaluate``, ``models``, ``manifest``, ``audit``,
``approvals``, ``release``, ``drill``, ``topics``. One module is no command: :mod:`.sources`,
where a command's events come from (a file or a topic range), read and reported the same way by
``train``, ``replay``, ``evaluate``, ``models show``, ``manifest suggest`` and ``audit``.

The long-running commands live with what they run: ``worker`` (``streams/worker/main.py``),
``actuator`` (:mod:`streams.clients.actuator`), ``runtime`` and ``demo`` (``streams/demo/``).
Imported by nobody but the entry point, the benchmarks and the tests (``replay.load_engine``
is the offline engine other commands share). Commands import :mod:`streams.api`,
:mod:`streams.clients` and the shared modules; errors are :class:`detector.errors.UsageError`.
"""
