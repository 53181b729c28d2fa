"""The ``flowbreaker`` command line (docs/contract.md, section 5).

Each sub-command lives in its own module exposing ``configure_parser(parser)``
and ``run(args) -> int``; this module only wires them. Exit codes: 0 success,
2 usage or input error, printed as one line in one style for every command,
``flowbreaker COMMAND: REASON``: argparse's own errors, :class:`UsageError`
(``detector.errors``, which every command raises) and the errors of unusable
policies, models and settings.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from detector.errors import UsageError

__all__ = ["main", "build_parser", "COMMANDS"]

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("streams.cli.train",
              "fit baseline profiles and models from past action events (a file or a Kafka topic)"),
    "replay": ("streams.cli.replay", "score events in order through the engine, one decision per valid event"),
    "simulate": ("streams.cli.simulate", "write a synthetic fleet's events with injected incidents and labels"),
    "evaluate": ("streams.cli.evaluate", "replay and report detection quality with plots"),
    "models": ("streams.cli.models", "the model registry: list, show, add, promote, rollback"),
    "worker": ("streams.worker.main", "run a stream-processing worker against Kafka"),
    "actuator": ("streams.clients.actuator", "run the freeze actuator against Kafka"),
    "runtime": ("streams.demo.simulated_runtime", "run the reference agent runtime (demo and tests)"),
    "topics": ("streams.cli.topics", "create flowbreaker's Kafka topics"),
    "approvals": ("streams.cli.approvals", "list, approve and deny pre-action approval requests (the /v1 API)"),
    "release": ("streams.cli.release", "release a frozen agent (publishes `release` on agent-control)"),
    "verdicts": ("streams.cli.verdicts", "dump the analysts' verdicts on agent-verdicts for replay --verdicts"),
    "keys": ("streams.cli.keys", "command signing keys (Ed25519): new, add, activate, public"),
    "demo": ("streams.demo.live", "the live demo: Kafka, worker, actuator, runtime and simulated traffic"),
    "manifest": ("streams.cli.manifest", "intended-use manifests: suggest from behaviour, check, publish"),
    "audit": ("streams.cli.audit", "behaviour against intended use per agent over a period (report)"),
    "drill": ("streams.cli.drill", "rehearse a freeze end to end on a live deployment (drill report)"),
    "otlp": ("streams.cli.otlp", "OpenTelemetry tool spans (OTLP/HTTP, or a Collector's Kafka topic) to action events"),
    "mcp-proxy": ("streams.mcp_proxy.cli",
                  "an MCP gateway for one agent: checks every tool call, obeys freezes, publishes the actions"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the house style: ``flowbreaker train: the following arguments are
    required: --out`` and exit 2 (argparse's own style adds the usage and ``error:``)."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="flowbreaker", description="Real-time anomalous data-flow detector for AI agents.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:  # a known command imports only its own module (a quick start)
            mod = importlib.import_module(module)
            mod.configure_parser(p)
            p.set_defaults(_run=mod.run)
    return parser


#: sub-commands that score or learn from events, and so classify destinations with a policy file
POLICY_COMMANDS = ("train", "replay", "evaluate")


def _note_missing_policy(args: argparse.Namespace) -> None:
    """Say once, on stderr, what the results just produced without a policy file mean
    (docs/contract.md, section 2): far more false freezes, which nothing else would tell.
    Said after a successful run, so that a usage error stays one line."""
    if args.command in POLICY_COMMANDS and getattr(args, "policy", None) is None:
        print(f"flowbreaker {args.command}: note: no --policy, so every destination counts as external; "
              "expect more alerts and false freezes", file=sys.stderr)


def _broker_error(err: BaseException) -> bool:
    """An error of a Kafka client (kafka-python or aiokafka) that escaped a command: the broker did not answer
    or refused, which is exit 1 in every command (contract section 5), never a traceback."""
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    return isinstance(err, (KafkaError, AioKafkaError))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    run = args._run
    from detector.policy import PolicyError
    from models.store import ModelError
    from streams.kafka_admin import KafkaUnavailable
    from streams.settings import SettingsError

    try:
        code = int(run(args) or 0)
        if code == 0:
            _note_missing_policy(args)
        return code
    except (UsageError, ModelError, PolicyError, SettingsError) as err:
        print(f"flowbreaker {args.command}: {err}", file=sys.stderr)
        return 2
    except KafkaUnavailable as err:  # a service it needs did not answer: the same style, exit 1
        print(f"flowbreaker {args.command}: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - only the broker's errors are ours to word; the rest re-raised
        if not _broker_error(err):
            raise
        what = (str(err).splitlines() or [""])[0]
        if not what.startswith(type(err).__name__):
            what = f"{type(err).__name__}: {what}".rstrip(": ")
        print(f"flowbreaker {args.command}: the Kafka broker did not answer or refused ({what})"[:500],
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
