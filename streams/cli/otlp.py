"""``flowbreaker otlp``: OpenTelemetry tool spans in, action events on ``agent-actions`` out.

    flowbreaker otlp [--listen HOST:PORT] [--from-topic TOPIC [--topic-encoding otlp_proto|otlp_json]]
                     [--mapping FILE.toml] [--max-request-bytes N] [--metrics-listen HOST:PORT] [Kafka flags]

An OTLP/HTTP receiver (``POST /v1/traces``, protobuf or JSON, gzip or not) on
``--listen`` (default ``127.0.0.1:4318``, the OTLP/HTTP port), and/or a reader of
the topic the OpenTelemetry Collector's Kafka exporter writes (``--from-topic``;
without ``--listen`` it listens on no port). Tool spans become action events
(docs/contract.md, "Tool spans"; :mod:`streams.otlp.translate`), with the
mapping file's help for the fields the conventions do not carry
(:mod:`streams.tool_mapping`). ``/metrics`` is served on the receiver's port,
or on ``--metrics-listen``.

Exit codes (docs/contract.md, section 5): 2 for a bad flag or an unusable
mapping file, 1 when the broker does not answer at start or an address cannot
be bound, 130 on Ctrl-C (SIGINT); SIGTERM stops it cleanly (0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from detector.errors import UsageError
from streams.settings import Settings, add_kafka_arguments

__all__ = ["configure_parser", "run", "parse_address", "DEFAULT_LISTEN", "DEFAULT_GROUP"]

log = logging.getLogger("flowbreaker.otlp")

DEFAULT_LISTEN = "127.0.0.1:4318"
DEFAULT_GROUP = "flowbreaker-otlp"
ENCODINGS = ("otlp_proto", "otlp_json")


def parse_address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:4318`` for IPv6) -> (host, port); ``UsageError`` naming the flag otherwise.

    >>> parse_address("127.0.0.1:4318", "--listen"), parse_address("[::1]:0", "--listen")
    (('127.0.0.1', 4318), ('::1', 0))
    >>> parse_address("4318", "--listen")
    Traceback (most recent call last):
    ...
    detector.errors.UsageError: --listen must be HOST:PORT, got '4318'
    """
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{flag} must be HOST:PORT, got {text!r}")
    return host, int(port)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", metavar="HOST:PORT", default=None,
                   help=f"OTLP/HTTP receiver address, POST /v1/traces (default {DEFAULT_LISTEN}; with --from-topic "
                        "the default is no receiver)")
    p.add_argument("--from-topic", metavar="TOPIC", default=None,
                   help="also (or instead) read the topic the OpenTelemetry Collector's Kafka exporter writes "
                        "(its default: otlp_spans)")
    p.add_argument("--topic-encoding", choices=ENCODINGS, default="otlp_proto",
                   help="the Kafka exporter's encoding of --from-topic records (default %(default)s)")
    p.add_argument("--group", default=None,
                   help=f"consumer group for --from-topic (default: the topic prefix + {DEFAULT_GROUP})")
    p.add_argument("--mapping", metavar="FILE.toml", default=None,
                   help="tool mapping file: action, resource, sensitivity, destinations... per tool-name glob "
                        "(docs/contract.md, 'The tool mapping file'); without it, the documented defaults")
    p.add_argument("--max-request-bytes", type=int, default=None, metavar="N",
                   help="largest request body, compressed and decompressed (default 8 MiB)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", default=None,
                   help="serve /metrics here too (the receiver's port serves it already)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the broker at start before exiting 1 (default %(default)s)")
    add_kafka_arguments(p)


def run(args: argparse.Namespace) -> int:
    from streams.otlp.translate import DEFAULT_MAX_BYTES
    from streams.tool_mapping import load_mapping

    settings = Settings.from_args(args)  # SettingsError: exit 2
    listen = args.listen if args.listen is not None else (None if args.from_topic else DEFAULT_LISTEN)
    address = parse_address(listen, "--listen") if listen else None
    metrics_address = parse_address(args.metrics_listen, "--metrics-listen") if args.metrics_listen else None
    max_bytes = DEFAULT_MAX_BYTES if args.max_request_bytes is None else args.max_request_bytes
    if max_bytes < 1024:
        raise UsageError(f"--max-request-bytes must be >= 1024, got {max_bytes}")
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout}")
    if args.from_topic is not None and not args.from_topic.strip():
        raise UsageError("--from-topic needs a topic name")
    mapping = load_mapping(args.mapping)  # MappingError: exit 2

    from streams.kafka_admin import ensure_topics

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    counts = ensure_topics(settings, topics=["actions"], timeout_s=args.timeout)  # KafkaUnavailable: exit 1
    topic = settings.topic("actions")
    group = args.group or settings.topic_prefix + DEFAULT_GROUP
    try:
        return asyncio.run(_serve(settings, mapping, topic, counts[topic], address, metrics_address, max_bytes,
                                  args.from_topic, args.topic_encoding, group))
    except KeyboardInterrupt:
        return 130


async def _serve(settings, mapping, topic, partitions, address, metrics_address, max_bytes, from_topic, encoding,
                 group) -> int:
    from aiohttp import web
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import KafkaError
    from prometheus_client import CollectorRegistry

    from streams.kafka_admin import KafkaUnavailable
    from streams.otlp.metrics import OtlpMetrics
    from streams.otlp.receiver import ActionPublisher, OtlpReceiver, TopicIntake
    from streams.otlp.translate import SpanTranslator

    producer = AIOKafkaProducer(client_id="flowbreaker-otlp", acks="all", linger_ms=5,
                                request_timeout_ms=15000, **settings.aiokafka_config())
    try:
        await producer.start()
    except (KafkaError, OSError) as err:
        await producer.stop()
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.bootstrap} ({err})") from None
    metrics = OtlpMetrics(CollectorRegistry())
    receiver = OtlpReceiver(SpanTranslator(mapping), ActionPublisher(producer, topic, partitions), metrics,
                            max_bytes=max_bytes)
    runners: list[web.AppRunner] = []
    consumer = intake = intake_task = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    got: list[int] = []

    def on_signal(sig: int) -> None:
        got.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        for where, app in ((address, receiver.app()), (metrics_address, None)):
            if where is None:
                continue
            if app is None:
                app = web.Application()
                app.router.add_get("/metrics", receiver.handle_metrics)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, where[0], where[1])
            try:
                await site.start()
            except OSError as err:
                print(f"flowbreaker otlp: cannot listen on {where[0]}:{where[1]}: {err.strerror}", file=sys.stderr)
                return 1
            bound = site._server.sockets[0].getsockname()[:2] if site._server and site._server.sockets else where
            what = "OTLP/HTTP receiver on http://%s:%d/v1/traces" if app is not None and where is address \
                else "metrics on http://%s:%d/metrics"
            log.info(what, bound[0], bound[1])
        if from_topic:
            consumer = AIOKafkaConsumer(from_topic, group_id=group, client_id="flowbreaker-otlp-intake",
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        **settings.aiokafka_config())
            try:
                await consumer.start()
            except (KafkaError, OSError) as err:
                raise KafkaUnavailable(f"cannot read {from_topic} at {settings.bootstrap} ({err})") from None
            intake = TopicIntake(receiver, consumer, encoding)
            intake_task = asyncio.create_task(intake.run())
            log.info("reading %s (%s) in consumer group %s", from_topic, encoding, group)
        log.info("publishing tool spans as action events on %s (%d partitions)", topic, partitions)
        waiters = [asyncio.create_task(stop.wait())] + ([intake_task] if intake_task else [])
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if intake_task is not None and intake_task in done and not stop.is_set():
            intake_task.result()  # the intake failed: raise it (exit 1 below)
        log.info("stopping")
        return 130 if signal.SIGINT in got else 0  # Ctrl-C: 130 (docs/contract.md, section 5); SIGTERM: 0
    except KafkaError as err:
        print(f"flowbreaker otlp: Kafka failed: {err!r}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if intake is not None:
            intake.stopping.set()
        if intake_task is not None:
            intake_task.cancel()
            await asyncio.gather(intake_task, return_exceptions=True)
        if consumer is not None:
            await consumer.stop()
        for runner in runners:
            await runner.cleanup()
        await producer.stop()
