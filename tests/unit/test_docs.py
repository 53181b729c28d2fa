"""The project's own documents: docs/contract.md says what the code does, and nothing points outside the repository.

The examples in the contract are parsed by the same code that reads real input, so an example that stops
validating fails here rather than in an integrator's producer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


# ---------------------------------------------------------------------- commands and numbers kept true
# (issue 21, item 9: "every number and command in the docs should come from a script or a test that keeps it true")

DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
_SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """``(document, line, argv)`` of every ``flowbreaker ...`` and ``scripts/demo.sh ...`` line in a shell code
    block of the README and docs/ (continuations joined, comments and leading ``VAR=value`` dropped; usage
    brackets ``[--flag X]`` read as if the optional part were given)."""
    import shlex

    found = []
    for doc in DOCS:
        for block in _SHELL_BLOCK.findall((ROOT / doc).read_text()):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
                while words and _ASSIGNMENT.match(words[0]):
                    words.pop(0)
                if not words:
                    continue
                if words[0] == "flowbreaker":
                    found.append((doc, line.strip(), words[1:]))
                elif words[0].endswith("scripts/demo.sh"):
                    found.append((doc, line.strip(), ["demo", *words[1:]]))
    return found


def test_the_documents_show_commands_to_check():
    docs = {doc for doc, _, _ in documented_commands()}
    assert {"README.md", "docs/retraining.md", "docs/api.md"} <= docs, docs


@pytest.mark.parametrize("doc,line,argv", [pytest.param(*c, id=f"{c[0]}: {' '.join(c[2][:2])}")
                                            for c in documented_commands()])
def test_every_command_in_a_shell_block_of_the_documents_parses_as_written(doc, line, argv, capsys):
    from streams.cli.main import build_parser

    parser = build_parser(argv[0] if argv else None)
    try:
        parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{doc}: `{line}` does not parse: {capsys.readouterr().err.strip()}")


def test_the_topic_list_of_the_internal_interfaces_is_the_codes():
    from streams.model_updates import MODEL_UPDATES
    from streams.settings import TOPICS

    section = re.search(r"^## Topics\n(.*?)(?=^## |\Z)", (ROOT / "docs" / "interfaces.md").read_text(), re.S | re.M)
    assert section, "docs/interfaces.md has no Topics section"
    listed = set(re.findall(r"`((?:agent|model)-[a-z-]+)`", section.group(1)))
    assert listed == {*TOPICS.values(), MODEL_UPDATES}


def _threshold_keys(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def test_the_thresholds_keys_in_the_contract_and_the_readme_are_the_policys():
    from dataclasses import fields

    from detector.policy import Thresholds

    keys = {f.name for f in fields(Thresholds)}
    contract = re.search(r"optional `\[thresholds\]` table(.*?)\n\n", CONTRACT, re.S)
    readme = re.search(r"may set `\[thresholds\]`(.*?)\n\n", README, re.S)
    assert contract and readme
    assert _threshold_keys(contract.group(1)) - {"thresholds"} == keys
    assert _threshold_keys(readme.group(1)) - {"thresholds"} == keys


def _numbers_block(name: str) -> list[str]:
    from bench.docs_numbers import DOCUMENT, marked

    text = DOCUMENT[name].read_text()
    start, end = marked(text, name)
    return text[start:end].strip().splitlines()


@pytest.mark.parametrize("name", ["prevention", "public-fixture", "evaluate-simulator"])
def test_every_number_block_of_the_readme_is_in_the_form_its_script_writes(name):
    from bench.docs_numbers import HEADER, ROW, render

    lines = _numbers_block(name)
    assert "\n".join(lines[:2]) == HEADER[name], f"regenerate: python bench/docs_numbers.py --write {name}"
    assert lines[2:] and render(name, lines[2:]) == "\n".join(lines)
    assert all(ROW[name].match(row) for row in lines[2:])


def test_the_readmes_prevention_numbers_cover_the_seeds_the_script_runs():
    from bench.docs_numbers import ROW, SEEDS

    seeds = [int(ROW["prevention"].match(row).group(1)) for row in _numbers_block("prevention")[2:]]
    assert seeds == list(SEEDS)


def test_the_rule_lists_numbers_on_the_public_fixture_are_what_it_gives_today():
    from bench.docs_numbers import FIXTURE_ROWS, ROW, fixture_rules_column

    rows = [ROW["public-fixture"].match(row) for row in _numbers_block("public-fixture")[2:]]
    assert [m.group(1) for m in rows] == list(FIXTURE_ROWS)
    assert [m.group(3) for m in rows] == fixture_rules_column()  # recomputed: no training, well under a second


def test_the_readme_says_what_the_fixture_shows_the_rule_list_catching_more_than_the_detector():
    from bench.docs_numbers import ROW

    caught = ROW["public-fixture"].match(_numbers_block("public-fixture")[2])
    assert caught.group(1) == "caught at the first harmful action"
    detector, rules = (int(caught.group(i).split("/")[0]) for i in (2, 3))
    said = "the rule list catches more" in " ".join(README.split())
    assert said == (rules > detector), "the README's sentence about the fixture no longer matches its numbers"


def test_the_runtime_client_example_builds_its_guard_as_written_with_the_public_key_file(tmp_path, monkeypatch):
    # it used to raise: a guard that follows agent-control needs keys to verify releases, and the example gave none
    from streams.clients.signing import new_key_file, public_key_file

    for var in ("FLOWBREAKER_SIGNING_KEYS", "FLOWBREAKER_SIGNING_KEYS_INLINE"):
        monkeypatch.delenv(var, raising=False)
    private = tmp_path / "signing-keys.toml"
    private.write_text(new_key_file())
    public = tmp_path / "signing-keys.pub"
    public.write_text(public_key_file(private))

    block = next(b for b in _blocks((ROOT / "docs" / "api.md").read_text(), "python") if "FreezeGuard(" in b)
    head = block[: block.index("\n", block.index("FreezeGuard(bootstrap")) + 1]  # up to the guard, not its use
    path = re.search(r'load_keyring\("([^"]+)"\)', head)
    assert path, "the example loads no key file"
    code = head.replace(path.group(1), str(public)).replace(".start()", "")  # no broker here: built, not started
    scope = {"bootstrap": "127.0.0.1:9092"}
    exec(compile(code, "docs/api.md", "exec"), scope)
    assert scope["guard"].keys is not None and not scope["guard"].keys.can_sign


_BENCH_COMMAND = re.compile(r"python3? (-m bench\.[a-z_.]+|(?:bench|scripts|dashboards)/[a-z_]+\.py)\b(.*)")


def documented_bench_commands() -> list[tuple[str, str, list[str]]]:
    """``(document, script, argv)`` of every ``python bench/<name>.py ...`` (and ``scripts/``, ``dashboards/``,
    ``-m bench.…``) in the README and docs/: a line of a shell block (continuations joined, a comment ends it) or
    an inline code span (over a line break too). Usage brackets are read as if the optional part were given, and
    ``a|b`` as its first choice."""
    import shlex

    found = []
    for doc in [*DOCS, "bench/public/README.md"]:
        text = (ROOT / doc).read_text()
        lines = [ln for block in _SHELL_BLOCK.findall(text) for ln in re.sub(r"\\\n\s*", " ", block).splitlines()]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)  # every fenced block out: what is left pairs its backticks
        lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
        for line in lines:
            m = _BENCH_COMMAND.search(line)
            if m:
                args = re.sub(r"(\S+)\|\S+", r"\1", m.group(2).replace("[", " ").replace("]", " "))
                found.append((doc, m.group(1), shlex.split(args, comments=True)))
    return found


class _Parsed(Exception):
    """Raised by the patched parse_args once a benchmark's arguments have parsed: nothing of it runs."""


@pytest.mark.parametrize("doc,script,argv", [pytest.param(*c, id=f"{c[0]}: {c[1]} {' '.join(c[2])}")
                                             for c in sorted(set((d, s, tuple(a))
                                                                 for d, s, a in documented_bench_commands()))])
def test_every_benchmark_command_in_the_documents_parses_as_written(doc, script, argv, monkeypatch, capsys):
    """A benchmark or script named in the documents exists and takes the arguments written beside it (``python
    bench/bench_latency.py --runs 2`` once failed as written: --bootstrap was required). Only its argument parser
    runs: every one of them parses with argparse."""
    import argparse
    import runpy

    module = script[3:] if script.startswith("-m ") else None
    path = ROOT / (module.replace(".", "/") + ".py" if module else script)
    assert path.is_file(), f"{doc} names {script}, which does not exist"
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr("sys.argv", [str(path), *argv])
    for where in (ROOT, ROOT / "tests" / "integration", path.parent):  # what bench/harness.py adds once
        monkeypatch.syspath_prepend(str(where))
    try:
        if module:
            monkeypatch.delitem(sys.modules, module, raising=False)  # runpy warns of a module imported already
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(path), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as exc:
        pytest.fail(f"{doc}: `python {script} {' '.join(argv)}` does not parse ({exc.code}): "
                    f"{capsys.readouterr().err.strip()[-300:]}")
    pytest.fail(f"{script} ran to its end without parsing arguments")
