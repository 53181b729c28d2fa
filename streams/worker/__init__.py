"""The stream-processing worker: ``flowbreaker worker`` (:mod:`.main`).

* :mod:`.main`: the command: loads the policy, the model and the manifests, creates missing
  topics, starts the followers and runs the faust worker;
* :mod:`.app`: the faust app (consumer group, the ``agent-state`` table, web pages, control
  agent) and the :class:`~streams.worker.app.Processor`'s batch step that calls the engine;
  its docstring states the four delivery rules the parts below keep;
* the processor's parts: :mod:`.reader` (batches of ``agent-actions`` below faust's
  per-message path), :mod:`.intake` (a record becomes a dead letter, a re-route or an event),
  :mod:`.ordering` (which offsets to process, seeks), :mod:`.residency` (agents live or
  resting in the table), :mod:`.outbox` (records decided, not yet confirmed),
  :mod:`.publisher` (producer batches), :mod:`.flushing` (state writes, offset commits);
* :mod:`.metrics` (the Prometheus series) and :mod:`.null_metrics`; :mod:`.drift_monitor`
  (live feature drift); :mod:`.model_follow` (promoted models from ``model-updates``).

Imported only by the ``flowbreaker`` entry point, bench and tests. It imports :mod:`detector`,
:mod:`models`, the modules :mod:`streams` shares, :mod:`streams.api` (mounted on its web
server) and :mod:`streams.clients` (the commands it writes and signs).
"""
