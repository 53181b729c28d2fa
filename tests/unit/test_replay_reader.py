"""replay's own reader (streams/cli/replay.py, ``_Events``): the events and invalid lines of
``read_events`` (streams/cli/sources.py), whatever the block size and however many are taken at a time."""
from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.cli import replay as cli_replay
from streams.cli.sources import read_events

_EVENT = {"ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o", "tool": "t", "action": "read",
          "resource": "r://x", "sensitivity": "internal"}


def _line(kind: str, n: int) -> bytes:
    if kind == "event":
        return json.dumps({"event_id": f"e{n}", **_EVENT}).encode()
    if kind == "spaced":  # spaces and a carriage return around a valid event
        return b"  " + json.dumps({"event_id": f"e{n}", **_EVENT}).encode() + b" \r"
    if kind == "long":  # longer than any block read here
        return json.dumps({"event_id": f"e{n}", **_EVENT, "pad": "x" * 300}).encode()
    return {"blank": b"", "spaces": b" \t ", "cr": b"\r", "vt": b"\x0b", "junk": b"{not json",
            "invalid": json.dumps({"event_id": f"e{n}"}).encode(), "nul": b"\x00"}[kind]


class _Pipe(io.RawIOBase):
    """A pipe: each read gives at most ``step`` bytes, whatever was asked."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        chunk = self.data[self.pos:self.pos + min(len(buf), self.step)]
        buf[:len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["event"] * 4 + ["spaced", "long", "blank", "spaces", "cr", "vt", "junk", "invalid",
                                                "nul"]), max_size=40),
       st.booleans(), st.sampled_from([1, 7, 64, 1 << 16]), st.sampled_from([1, 3, 128]), st.booleans(),
       st.sampled_from([1, 5, 1000]))
def test_replay_reads_the_events_and_invalid_lines_that_read_events_reads(kinds, last_newline, block, take, pipe,
                                                                           step):
    data = b"\n".join(_line(k, n) for n, k in enumerate(kinds)) + (b"\n" if last_newline and kinds else b"")
    want_errors: list[tuple[int, str]] = []
    want = list(read_events(io.BytesIO(data), on_error=lambda no, err: want_errors.append((no, str(err)))))
    fh = io.BufferedReader(_Pipe(data, step), 8) if pipe else io.BytesIO(data)
    errors: list[tuple[int, str]] = []
    reader = cli_replay._Events(fh, lambda no, err: errors.append((no, str(err))), block=block)
    got = []
    while batch := reader.take(take):
        assert len(batch) <= take
        got.extend(batch)
        if len(batch) < take:  # fewer only at the end
            assert reader.take(take) == []
            break
    assert [(e.event_id, e.to_dict()) for e in got] == [(e.event_id, e.to_dict()) for e in want]
    assert [e.t for e in got] == [e.t for e in want]
    assert errors == want_errors
