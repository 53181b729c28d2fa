"""The demo and the simulated agents that play in it (and in the integration tests).

* :mod:`.live`: ``flowbreaker demo``: starts Kafka, a worker, the actuator and the runtime,
  plays simulated traffic with an incident, and shows the freeze, its trace and the release;
* :mod:`.simulated_runtime`: ``flowbreaker runtime``, the reference agent runtime: simulated
  agents (:mod:`models.simulate`) that take tasks from ``agent-tasks``, publish their actions
  and obey freezes through an embedded :class:`streams.clients.guard.FreezeGuard`.

Imported by the command line (``streams/cli/main.py``) and the tests; it imports
:mod:`streams.clients`, :mod:`streams.api` (tokens) and the shared modules.
"""
