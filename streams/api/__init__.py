"""The SOC's HTTP API, served by every worker (``/v1``, docs/api.md).

* :mod:`.server`: routes, routing a request to the worker that owns the agent, handlers;
  the worker mounts it (``mount_api``);
* :mod:`.openapi`: the ``/v1/openapi.json`` document;
* :mod:`.auth`: bearer tokens -> principal and role (``python -m streams.api.auth new NAME ROLE``);
* :mod:`.audit_trail`: one record per state-changing act on ``agent-audit``;
* :mod:`.approvals`: the approval store every worker keeps and the owner's service;
* :mod:`.control_feed`: what every worker folds from ``agent-control``, ``agent-incidents`` and
  ``agent-approvals`` to answer the reads locally.

Imported by the worker (``streams/worker/app.py`` mounts the API and writes automatic freezes to the
audit trail), by ``flowbreaker release`` (audit trail, token names, the incident size bound) and
by the demo (tokens). It imports the shared modules and :mod:`streams.clients` (commands, signing).
"""
