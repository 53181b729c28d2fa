"""Configuration of flowbreaker's Kafka-facing processes, from flags and environment.

One :class:`Settings` object says where the broker is, how to authenticate to it,
what the topics are called and how a worker runs. Every value comes from, in
order of precedence: a command-line flag, a ``FLOWBREAKER_*`` environment
variable, the default below. Secrets (SASL password, TLS key password) come
only from the environment (or a file named there), never from a flag, so they
do not show up in ``ps``.

=========================== ================================== =======================
setting                     environment                        default
=========================== ================================== =======================
``bootstrap``               ``FLOWBREAKER_BOOTSTRAP``          ``127.0.0.1:9092``
``partitions``              ``FLOWBREAKER_PARTITIONS``         8 (new topics only)
``replication_factor``      ``FLOWBREAKER_REPLICATION_FACTOR`` 1
``app_id``                  ``FLOWBREAKER_APP_ID``             ``flowbreaker`` (consumer group, changelog names)
``topic_prefix``            ``FLOWBREAKER_TOPIC_PREFIX``       ``""`` (prepended to every topic name)
``datadir``                 ``FLOWBREAKER_DATADIR``            ``./var/worker-<web port>``
``web_port`` / ``web_bind`` ``FLOWBREAKER_WEB_PORT`` / ``_BIND`` 6066 / ``127.0.0.1``
``policy`` / ``model``      ``FLOWBREAKER_POLICY`` / ``_MODEL`` none (defaults / online baselines)
``tokens``                  ``FLOWBREAKER_TOKENS``             none: API tokens file (``docs/api.md``)
``advertised_url``          ``FLOWBREAKER_ADVERTISED_URL``     ``http://<web bind>:<web port>``
``signing_keys``            ``FLOWBREAKER_SIGNING_KEYS``       none: freeze/release signing key file
                            (or ``FLOWBREAKER_SIGNING_KEYS_INLINE``; ``streams/clients/signing.py``)
``metrics_auth``            ``FLOWBREAKER_METRICS_AUTH``       false: ``/metrics`` and ``/status`` need a token
``manifests``               ``FLOWBREAKER_MANIFESTS``          none: intended-use manifest file or directory
``drill_<step>_s``          ``FLOWBREAKER_DRILL_<STEP>_S``     targets of ``flowbreaker drill``'s steps (``streams/cli/drill.py``)
``security_protocol``       ``FLOWBREAKER_SECURITY_PROTOCOL``  ``PLAINTEXT`` (``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``)
``sasl_mechanism``          ``FLOWBREAKER_SASL_MECHANISM``     ``SCRAM-SHA-512`` (``PLAIN``, ``SCRAM-SHA-256``)
``sasl_username``           ``FLOWBREAKER_SASL_USERNAME``
(password)                  ``FLOWBREAKER_SASL_PASSWORD`` or ``FLOWBREAKER_SASL_PASSWORD_FILE``
``ssl_cafile``              ``FLOWBREAKER_SSL_CAFILE``         system trust store
``ssl_certfile`` / keyfile  ``FLOWBREAKER_SSL_CERTFILE`` / ``_KEYFILE`` (mutual TLS)
(key password)              ``FLOWBREAKER_SSL_KEY_PASSWORD``
``batch_max``               ``FLOWBREAKER_BATCH_MAX``          250: most records of agent-actions in one batch
``flush_interval`` (T)      ``FLOWBREAKER_FLUSH_INTERVAL``     5 s: a changed agent's state is written ...
``flush_events`` (K)        ``FLOWBREAKER_FLUSH_EVENTS``       ... or after 1,000 of its events
``session_timeout``         ``FLOWBREAKER_SESSION_TIMEOUT``    10 s: a silent worker's partitions move
``max_clock_skew``          ``FLOWBREAKER_MAX_CLOCK_SKEW``     300 s: events dated further ahead of their record's
                                                               broker time go to the DLQ (``timestamp``)
``rest_after``              ``FLOWBREAKER_REST_AFTER``         60 s: an agent quiet this long leaves memory and rests
                                                               serialised in the table (``streams/worker/residency.py``)
=========================== ================================== =======================

The same settings give the keyword arguments of each Kafka client in use:
:meth:`Settings.faust_credentials` (faust's ``broker_credentials``),
:meth:`Settings.kafka_python_config` (kafka-python admin, producers, consumers)
and :meth:`Settings.aiokafka_config`.

>>> s = Settings(topic_prefix="it-")
>>> s.topic("actions"), s.topics()["dlq"]
('it-agent-actions', 'it-agent-actions-dlq')
>>> s.kafka_python_config()
{'bootstrap_servers': ['127.0.0.1:9092'], 'security_protocol': 'PLAINTEXT'}
>>> Settings(security_protocol="SASL_SSL", sasl_username="fb", sasl_password="pw").kafka_python_config()["sasl_mechanism"]
'SCRAM-SHA-512'
>>> Settings(security_protocol="TLS").validate()
Traceback (most recent call last):
...
streams.settings.SettingsError: security protocol 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Settings", "SettingsError", "TOPICS", "add_kafka_arguments", "add_worker_arguments"]

#: logical name -> topic name (before the prefix)
TOPICS: dict[str, str] = {
    "actions": "agent-actions",
    "dlq": "agent-actions-dlq",
    "decisions": "agent-decisions",
    "control": "agent-control",
    "incidents": "agent-incidents",
    "tasks": "agent-tasks",
    "audit": "agent-audit",          # control-plane audit trail (streams/api/audit_trail.py)
    "feedback": "agent-feedback",    # analysts' verdicts on decisions, for retraining
    "approvals": "agent-approvals",  # approval requests and decisions (streams/api/approvals.py)
    "manifests": "agent-manifests",  # intended-use manifests, compacted (streams/manifests.py)
    "acks": "agent-control-acks",    # guards' and the actuator's acknowledgements of commands (streams/clients/acks.py)
    "drills": "agent-drills",        # results of `flowbreaker drill` (streams/cli/drill.py)
    "verdicts": "agent-verdicts",    # analysts' signed verdicts on incidents and alert episodes (streams/verdicts.py)
    "alerts": "agent-alerts",        # alert episodes, one record when one opens, changes or closes (workers)
}

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV = "FLOWBREAKER_"


class SettingsError(ValueError):
    """A setting that cannot work; the text says which and why, in one line."""


@dataclass
class Settings:
    """Everything a flowbreaker Kafka process needs to know. See the module docstring."""

    bootstrap: str = "127.0.0.1:9092"
    partitions: int = 8
    replication_factor: int = 1
    app_id: str = "flowbreaker"
    topic_prefix: str = ""
    datadir: str | None = None
    web_port: int = 6066
    web_bind: str = "127.0.0.1"
    policy: str | None = None
    model: str | None = None
    # control-plane API (streams/api/server.py)
    tokens: str | None = None            # tokens file (streams/api/auth.py); FLOWBREAKER_API_TOKENS without one
    advertised_url: str | None = None    # URL other workers forward API requests to (default http://bind:port)
    metrics_auth: bool = False           # /metrics and /status need a bearer token (role monitor, viewer+)
    # freeze/release command signing keys (streams/clients/signing.py): a file; FLOWBREAKER_SIGNING_KEYS_INLINE without one
    signing_keys: str | None = None
    # intended-use manifests (streams/manifests.py): a file or directory; the agent-manifests topic adds to it
    manifests: str | None = None
    # seconds each step of `flowbreaker drill` may take (streams/cli/drill.py): from the first harmful event ...
    drill_decision_s: float = 5.0
    drill_freeze_command_s: float = 10.0
    drill_guard_ack_s: float = 15.0
    drill_actuator_webhook_s: float = 30.0
    drill_alert_s: float = 60.0
    # ... and from the release request
    drill_release_s: float = 15.0
    drill_release_guard_ack_s: float = 15.0
    drill_release_actuator_s: float = 30.0
    drill_probation_s: float = 15.0
    # stream processing knobs (see streams/worker/app.py for what they trade)
    batch_max: int = 250           # records per batch the worker reads (streams/worker/reader.py): bounds a batch's latency
    flush_interval: float = 5.0    # T: a dirty agent's state is written at most this long after its first change
    flush_events: int = 1000       # K: ... or once it has this many unwritten events
    session_timeout: float = 10.0  # seconds without heartbeat before a worker's partitions move
    max_clock_skew: float = 300.0  # seconds an event's ts may be ahead of its record's broker time (streams/worker/intake.py)
    rest_after: float = 60.0       # seconds a quiet agent stays resident before it rests in the table (residency.py)
    # security
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    # ------------------------------------------------------------------ building
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, overridden by ``FLOWBREAKER_*`` variables, overridden by ``overrides`` (not None)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f, raw)
        pw_file = env.get(ENV + "SASL_PASSWORD_FILE")
        if pw_file and "sasl_password" not in values:
            try:
                values["sasl_password"] = Path(pw_file).read_text().rstrip("\r\n")
            except OSError as err:
                raise SettingsError(f"cannot read FLOWBREAKER_SASL_PASSWORD_FILE {pw_file}: {err.strerror}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        s.validate()
        return s

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> "Settings":
        """Settings from parsed flags (those added by :func:`add_kafka_arguments` and
        :func:`add_worker_arguments`) over the environment."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_env(environ, **{k: v for k, v in vars(args).items() if k in names})

    def validate(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise SettingsError(f"security protocol {self.security_protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.sasl and self.sasl_mechanism not in MECHANISMS:
            raise SettingsError(f"SASL mechanism {self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}")
        if self.sasl and not (self.sasl_username and self.sasl_password is not None):
            raise SettingsError(f"{self.security_protocol} needs FLOWBREAKER_SASL_USERNAME and "
                                "FLOWBREAKER_SASL_PASSWORD (or FLOWBREAKER_SASL_PASSWORD_FILE)")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise SettingsError("a TLS client certificate needs both FLOWBREAKER_SSL_CERTFILE and FLOWBREAKER_SSL_KEYFILE")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise SettingsError(f"{name}: no such file {path}")
        if not self.bootstrap_servers:
            raise SettingsError("bootstrap: no broker address given")
        if self.partitions < 1 or self.replication_factor < 1:
            raise SettingsError("partitions and replication factor must be >= 1")
        if not 1 <= self.web_port <= 65535:
            raise SettingsError(f"web port {self.web_port} is not in 1..65535")
        if (self.batch_max < 1 or self.flush_interval <= 0 or self.flush_events < 1
                or self.session_timeout < 1):
            raise SettingsError("batch and flush settings must be positive")
        if not self.max_clock_skew >= 0:
            raise SettingsError(f"max clock skew {self.max_clock_skew} must be >= 0 seconds")
        if not self.rest_after >= 0:
            raise SettingsError(f"rest after {self.rest_after} must be >= 0 seconds")

    # ------------------------------------------------------------------ topics
    def topic(self, logical: str) -> str:
        """The Kafka name of a flowbreaker topic: ``topic('control')`` -> ``agent-control``."""
        return self.topic_prefix + TOPICS[logical]

    def topics(self) -> dict[str, str]:
        return {k: self.topic(k) for k in TOPICS}

    @property
    def bootstrap_servers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap.split(",") if b.strip()]

    @property
    def worker_datadir(self) -> Path:
        return Path(self.datadir) if self.datadir else Path("var") / f"worker-{self.web_port}"

    # ------------------------------------------------------------------ security
    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL/SASL_SSL (server verified against ``ssl_cafile`` or the system store)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile)
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password=self.ssl_key_password)
        return ctx

    def faust_credentials(self):
        """faust's ``broker_credentials`` (None for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import faust
        from faust.types.auth import SASLMechanism

        if self.sasl:
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                         mechanism=SASLMechanism(self.sasl_mechanism),
                                         ssl_context=self.ssl_context())
        return faust.SSLCredentials(self.ssl_context())

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (KafkaAdminClient, KafkaProducer, KafkaConsumer)."""
        cfg: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers,
                               "security_protocol": self.security_protocol}
        if self.sasl:
            cfg.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                       sasl_plain_password=self.sasl_password)
        if self.tls:
            cfg.update(ssl_context=self.ssl_context(), ssl_check_hostname=self.ssl_check_hostname)
        return cfg

    def aiokafka_config(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (AIOKafkaConsumer, AIOKafkaProducer): the kafka-python
        ones, less ``ssl_check_hostname`` (aiokafka takes hostname checking from the SSL context)."""
        cfg = self.kafka_python_config()
        cfg.pop("ssl_check_hostname", None)
        return cfg


def _convert(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise SettingsError(f"{ENV}{f.name.upper()}={raw!r} is not a valid {kind.split()[0]}") from None
    return raw


def add_kafka_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every Kafka-facing sub-command shares (defaults None: the environment decides)."""
    g = p.add_argument_group("Kafka")
    g.add_argument("--bootstrap", metavar="HOST:PORT[,...]",
                   help="broker addresses (env FLOWBREAKER_BOOTSTRAP, default 127.0.0.1:9092)")
    g.add_argument("--topic-prefix", dest="topic_prefix", metavar="PREFIX",
                   help="prefix for every topic name (env FLOWBREAKER_TOPIC_PREFIX)")
    g.add_argument("--partitions", type=int, metavar="N",
                   help="partitions of topics this command creates (env FLOWBREAKER_PARTITIONS, default 8)")
    g.add_argument("--replication-factor", dest="replication_factor", type=int, metavar="N",
                   help="replication factor of topics this command creates (default 1)")
    g.add_argument("--security-protocol", dest="security_protocol", choices=PROTOCOLS,
                   help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (env FLOWBREAKER_SECURITY_PROTOCOL); "
                        "SASL credentials come from FLOWBREAKER_SASL_USERNAME / FLOWBREAKER_SASL_PASSWORD")
    g.add_argument("--sasl-mechanism", dest="sasl_mechanism", choices=MECHANISMS,
                   help="SASL mechanism (default SCRAM-SHA-512)")
    g.add_argument("--ssl-cafile", dest="ssl_cafile", metavar="PEM", help="CA bundle that signed the brokers' certificates")
    g.add_argument("--ssl-certfile", dest="ssl_certfile", metavar="PEM", help="client certificate (mutual TLS)")
    g.add_argument("--ssl-keyfile", dest="ssl_keyfile", metavar="PEM", help="client private key (mutual TLS)")
    g.add_argument("--signing-keys", dest="signing_keys", metavar="FILE",
                   help="freeze/release command keys: the private file on workers and key holders, the "
                        "public one elsewhere (env FLOWBREAKER_SIGNING_KEYS; flowbreaker keys new FILE)")


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``flowbreaker worker``."""
    g = p.add_argument_group("worker")
    g.add_argument("--app-id", dest="app_id", metavar="ID",
                   help="faust app id: consumer group and changelog topic names (default flowbreaker)")
    g.add_argument("--web-port", dest="web_port", type=int, metavar="PORT",
                   help="HTTP port for /metrics and /status (default 6066; one per worker on a host)")
    g.add_argument("--web-bind", dest="web_bind", metavar="ADDR", help="HTTP bind address (default 127.0.0.1)")
    g.add_argument("--datadir", metavar="DIR", help="this worker's local data directory (default var/worker-<web port>)")
    g.add_argument("--policy", metavar="P.toml", help="policy file (docs/contract.md, section 2)")
    g.add_argument("--model", metavar="MODEL_DIR", help="trained model directory (default: online baselines only)")
    g.add_argument("--tokens", metavar="FILE",
                   help="API bearer tokens (TOML/JSON of name, role, sha256; env FLOWBREAKER_TOKENS; docs/api.md)")
    g.add_argument("--metrics-auth", dest="metrics_auth", action="store_const", const=True, default=None,
                   help="/metrics and /status need a bearer token (role monitor, viewer, analyst or lead; "
                        "env FLOWBREAKER_METRICS_AUTH=1)")
    g.add_argument("--advertised-url", dest="advertised_url", metavar="URL",
                   help="this worker's API URL as other workers reach it (default http://<web bind>:<web port>)")
    g.add_argument("--manifests", metavar="PATH",
                   help="intended-use manifests: a TOML file or a directory of them (env FLOWBREAKER_MANIFESTS); "
                        "the agent-manifests topic adds newer versions")
    g.add_argument("--batch-max", dest="batch_max", type=int, metavar="N",
                   help="most records of agent-actions per batch (default 250)")
    g.add_argument("--flush-interval", dest="flush_interval", type=float, metavar="SECONDS",
                   help="write a changed agent's state at most this long after its first change (default 5)")
    g.add_argument("--flush-events", dest="flush_events", type=int, metavar="N",
                   help="... or after this many of its events (default 1000)")
    g.add_argument("--rest-after", dest="rest_after", type=float, metavar="SECONDS",
                   help="an agent quiet this long leaves memory and rests serialised in the table (default 60)")
    g.add_argument("--max-clock-skew", dest="max_clock_skew", type=float, metavar="SECONDS",
                   help="an event dated more than this ahead of its record's broker time is refused to the DLQ "
                        "(default 300)")
    g.add_argument("--session-timeout", dest="session_timeout", type=float, metavar="SECONDS",
                   help="a worker silent this long loses its partitions to the others (default 10; "
                        "the broker's group.min.session.timeout.ms is the floor)")
