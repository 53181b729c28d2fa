"""What an agent runtime or an orchestrator imports to obey flowbreaker.

* :mod:`.guard`: :class:`~streams.clients.guard.FreezeGuard`, embedded in a runtime: follows
  ``agent-control`` and answers ``may_proceed(agent_id)``;
* :mod:`.check_client`: the pre-action check (``POST /v1/check``) as a runtime calls it;
* :mod:`.actuator`: ``flowbreaker actuator``, which enacts freeze and release commands
  (webhook, log) for an orchestrator;
* :mod:`.acks`: acknowledgements of enacted commands on ``agent-control-acks``;
* :mod:`.commands`: decoding control-side records and the rules for which commands to honour;
* :mod:`.signing`: Ed25519 keys (clients hold only public ones) and the signatures every freeze and
  release carries.

The workers and the SOC API import :mod:`.commands` and :mod:`.signing` too: they write
the commands these clients verify. Nothing here imports the worker, the API or the CLI.
"""
