"""``flowbreaker worker``: one stream-processing worker, in the foreground.

Loads the policy and the model (input errors exit 2 before anything touches
Kafka), creates the topics that are missing, then runs the faust worker of
:mod:`streams.worker.app` until SIGTERM or SIGINT, which stop it cleanly: every decided
event's state is written and its offset committed before it exits 0.

It prints one line on stdout each time its partitions are assigned and their
state is recovered::

    flowbreaker worker ready: 4 partitions of agent-actions [0,2,4,6] (rebalance 1, web :6066)

and serves ``/metrics`` (Prometheus) and ``/status`` (JSON) on its web port.
Run several on one host with distinct ``--web-port`` and ``--datadir``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from streams.settings import Settings, SettingsError, add_kafka_arguments, add_worker_arguments

__all__ = ["configure_parser", "run"]

log = logging.getLogger("flowbreaker.worker")

#: the interpreter's switch interval in a worker (Python's default is 5 ms; see run())
SWITCH_INTERVAL_S = 0.0005


def configure_parser(p: argparse.ArgumentParser) -> None:
    add_kafka_arguments(p)
    add_worker_arguments(p)
    p.add_argument("--log-level", dest="log_level", default=os.environ.get("FLOWBREAKER_LOG_LEVEL", "warning"),
                   choices=("debug", "info", "warning", "error"), help="faust and worker log level (default warning)")
    p.add_argument("--broker-timeout", dest="broker_timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the broker at start (default 60)")


def _metrics(engine):
    from streams.worker.metrics import Metrics

    m = Metrics()
    card = getattr(engine.model, "card", None) or {}
    trained = card.get("trained_at") or (card.get("training_window") or {}).get("until")
    m.set_model(engine.model_version, trained)
    return m


def _quiet_worker_class():
    from faust.worker import Worker

    class QuietWorker(Worker):
        """faust's worker, with the root logger at the chosen level: faust leaves it at DEBUG for its terminal
        spinner, so every library's debug record was built and then dropped (4% of a busy worker's time)."""

        def on_setup_root_logger(self, logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            if level:
                logger.setLevel(level)

    return QuietWorker


def run(args: argparse.Namespace) -> int:
    from detector.errors import UsageError

    try:
        settings = Settings.from_args(args)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    from models.store import load_engine
    from streams.manifests import load_book

    engine = load_engine(settings.model, settings.policy)  # the engine replay builds; PolicyError / ModelError -> exit 2
    engine.manifests = load_book(settings.manifests)       # ManifestError -> exit 2 naming file and line

    from streams.kafka_admin import KafkaUnavailable, ensure_topics

    try:
        counts = ensure_topics(settings, timeout_s=args.broker_timeout)
    except KafkaUnavailable as err:
        print(f"flowbreaker worker: {err}", file=sys.stderr)
        return 1
    actions, control = settings.topic("actions"), settings.topic("control")
    if counts[actions] != counts[control]:
        raise UsageError(f"{actions} has {counts[actions]} partitions and {control} {counts[control]}: "
                         "they must be equal (releases are applied by the owner of the agent's partition)")
    if counts[actions] != settings.partitions:
        print(f"flowbreaker worker: note: {actions} exists with {counts[actions]} partitions; using that",
              file=sys.stderr)

    metrics = _metrics(engine)
    # Full collections of a large young heap paused the event loop for 50-135 ms (bench/bench_check.py):
    # collect young objects less often; long-lived state is frozen out of collection once the worker is up.
    from streams.gc_tuning import tune

    tune()
    # faust reads Kafka in a thread of its own (aiokafka's fetcher) beside the event loop that decides and answers
    # /v1/check: with Python's 5 ms switch interval, a check arriving while that thread decodes a fetch waited up
    # to 5 ms for the interpreter lock (a worker's event loop traced: 6-24 ms steps of check handlers beside the
    # fetcher's). 0.5 ms bounds that wait; bench/bench_mcp_proxy.py's check after idle, p99: 4.6-5.2 -> 3.0-3.4 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if os.environ.get("FLOWBREAKER_TRACEMALLOC"):  # memory measurement (bench/bench_memory.py): /status?memory=1
        import tracemalloc

        tracemalloc.start(int(os.environ["FLOWBREAKER_TRACEMALLOC"]) if os.environ[
            "FLOWBREAKER_TRACEMALLOC"].isdigit() else 1)
    from streams.worker.app import create_app

    app, processor = create_app(settings, engine, partition_counts=counts, metrics=metrics)
    metrics.set_worker(f"{os.uname().nodename}:{settings.web_port}")
    from streams.worker.model_follow import ModelFollower

    def on_model(model, note) -> None:
        processor.pending_model = model
        print(f"flowbreaker worker: model {model.version} announced by {note.get('promoted_by')}; "
              "switching at the next batch", flush=True)

    def on_error(reason, note) -> None:
        print(f"flowbreaker worker: model update refused ({reason}): {note.get('error')}; keeping "
              f"{engine.model_version}", file=sys.stderr, flush=True)

    def on_reject(reason) -> None:  # a message on model-updates that is not an announcement: counted
        if processor.control_metrics is not None:
            processor.control_metrics.reject("model_updates", reason)

    models = ModelFollower(settings, on_model=on_model, on_error=on_error, current_version=engine.model_version,
                           on_reject=on_reject)
    # intended-use manifests: the files given, with newer versions from agent-manifests swapped in between batches
    from streams.drill_results import DrillFollower
    from streams.manifests import ManifestFollower
    from streams.topic_follow import TopicFollowers

    def on_book(book) -> None:
        engine.manifests = book
        metrics.set_manifests(len(book))

    metrics.set_manifests(len(engine.manifests or ()))
    manifests = ManifestFollower(settings, on_book=on_book, base=engine.manifests,
                                 on_skip=lambda why: metrics.manifest_skipped())
    drills = DrillFollower(settings, on_result=metrics.set_drill)  # the last drill, for DrillFailed / DrillStale
    TopicFollowers(settings, [models, manifests, drills]).start()  # one thread, one consumer for the three
    worker = _quiet_worker_class()(app, loglevel=args.log_level.upper(), quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 0 and getattr(app, "crash_reason", None) is not None:
            return 1
        return code
    return 0
