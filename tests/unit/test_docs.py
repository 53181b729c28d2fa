"""The project's own documents: docs/contract.md says what the code does, and nothing points outside the repository.

The examples in the contract are parsed by the same code that reads real input, so an example that stops
validating fails here rather than in an integrator's producer.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from detector.events import decode_event
from detector.policy import Policy

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = (ROOT / "docs" / "contract.md").read_text()
README = (ROOT / "README.md").read_text()


def _section(text: str, number: int) -> str:
    """The body of ``## N. ...`` up to the next ``## ``."""
    m = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.S | re.M)
    assert m, f"no section {number}"
    return m.group(0)


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared|/work/shared")
    hits = [f for f in files if (ROOT / f).is_file() and f != "tests/unit/test_docs.py"
            and outside.search((ROOT / f).read_text(errors="ignore"))]
    assert hits == []


def test_the_contracts_example_event_is_a_valid_event_with_every_field():
    example = json.loads(_blocks(_section(CONTRACT, 1), "json")[0])
    ev = decode_event(json.dumps(example).encode())
    assert set(example) == set(ev.to_dict())  # complete: every field of the schema is shown


def test_the_contracts_example_policy_loads():
    text = _blocks(_section(CONTRACT, 2), "toml")[0]
    policy = Policy.from_dict(tomllib.loads(text))
    assert policy.classify("slack:#all-hands") == ("broadcast", 48000)
    assert policy.classify("email:eve@evil.example")[0] == "external"


def test_every_topic_of_the_settings_is_in_the_topic_table():
    from streams.model_updates import MODEL_UPDATES
    from streams.settings import TOPICS

    table = _section(CONTRACT, 6)
    missing = [t for t in [*TOPICS.values(), MODEL_UPDATES] if f"| `{t}` |" not in table]
    assert missing == []


def test_every_sub_command_is_in_the_command_table():
    from streams.cli.main import COMMANDS

    table = _section(CONTRACT, 5)
    assert [c for c in COMMANDS if f"`flowbreaker {c}" not in table] == []


@pytest.mark.parametrize("doc", ["README.md", "docs/contract.md", "docs/api.md", "docs/retraining.md"])
def test_python_examples_in_the_documents_compile(doc):
    for block in _blocks((ROOT / doc).read_text(), "python"):
        compile(block, doc, "exec")


def test_readme_publishing_example_keys_by_agent_id():
    block = next(b for b in _blocks(README, "python") if "KafkaProducer" in b)
    assert 'key=event["agent_id"]' in block and '"agent-actions"' in block
