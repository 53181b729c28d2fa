"""The tool mapping (streams/tool_mapping.py): from a tool call seen from outside to a contract action event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import EventError, decode_event
from streams.tool_mapping import MappingError, infer_action, load_mapping, mapping_from_dict

TS = "2026-03-02T09:00:00.250Z"


def call(mapping, tool="crm.lookup", *, arguments=None, result=None, attributes=None, **kw):
    args = dict(agent_id="agent-1", task_id="task-1", event_id="ev-1", ts=TS)
    args.update(kw)
    return mapping.event_for(tool=tool, arguments=arguments, result=result, attributes=attributes or {}, **args)


def write(tmp_path, text):
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    return path


def test_a_call_with_no_configuration_gives_an_event_the_workers_accept():
    ev = decode_event(call(load_mapping(None), "hr_db.query"))
    assert (ev.action, ev.resource, ev.sensitivity, ev.operator_id) == ("read", "tool://hr_db.query", "internal",
                                                                       "unknown")
    assert (ev.records, ev.bytes, ev.destinations, ev.requested_by) == (0, 0, [], None)
    assert (ev.agent_id, ev.task_id, ev.event_id, ev.ts) == ("agent-1", "task-1", "ev-1", TS)


def test_the_default_bytes_are_the_size_of_the_result_in_utf8():
    m = load_mapping(None)
    assert call(m, result="héllo")["bytes"] == 6
    assert call(m, result={"rows": [1, 2]})["bytes"] == len(b'{"rows":[1,2]}')
    assert call(m, result=None)["bytes"] == 0


def test_the_default_requester_is_the_end_user_attribute():
    m = load_mapping(None)
    assert call(m, attributes={"enduser.id": "dana"})["requested_by"] == "dana"
    assert call(m, attributes={"user.id": "sam"})["requested_by"] == "sam"
    assert "requested_by" not in call(m)


@pytest.mark.parametrize("tool, action", [
    ("files.delete", "delete"), ("removeUser", "delete"), ("slack.post_message", "send"), ("send_email", "send"),
    ("read_email", "read"), ("get_message", "read"), ("run_shell", "exec"), ("db.insert", "write"),
    ("search_docs", "read"), ("getAndDelete", "delete"), ("frobnicate", "exec"), ("", "exec"),
])
def test_the_action_is_guessed_from_the_words_of_the_tool_name(tool, action):
    assert infer_action(tool) == action


def test_flowbreaker_attributes_give_the_fields_the_conventions_do_not_carry():
    ev = decode_event(call(load_mapping(None), "frobnicate", attributes={
        "flowbreaker.action": "send", "flowbreaker.resource": "crm://contacts", "flowbreaker.sensitivity": "restricted",
        "flowbreaker.destinations": ["email:x@partner.example", "slack:#ext"], "flowbreaker.records": 40,
        "flowbreaker.bytes": 1234, "flowbreaker.requested_by": "dana", "flowbreaker.operator_id": "team-crm",
        "flowbreaker.approval_id": "CHG-1", "flowbreaker.instruction_hash": "sha256:ab"}))
    assert (ev.action, ev.resource, ev.sensitivity, ev.records, ev.bytes) == ("send", "crm://contacts", "restricted",
                                                                             40, 1234)
    assert ev.destinations == ["email:x@partner.example", "slack:#ext"]
    assert (ev.requested_by, ev.operator_id, ev.approval_id, ev.instruction_hash) == ("dana", "team-crm", "CHG-1",
                                                                                     "sha256:ab")


def test_one_destination_may_be_a_plain_string_attribute():
    assert call(load_mapping(None), attributes={"flowbreaker.destinations": "email:x@y"})["destinations"] == ["email:x@y"]


def test_the_mapping_file_comes_before_attributes_and_attributes_before_its_defaults(tmp_path):
    m = load_mapping(write(tmp_path, """
[defaults]
sensitivity = "confidential"
operator_id = "team-default"

[[tool]]
match = "hr_db.*"
sensitivity = "restricted"
"""))
    hr = call(m, "hr_db.query", attributes={"flowbreaker.sensitivity": "public"})
    assert hr["sensitivity"] == "restricted"  # the operator's file pins it
    other = call(m, "wiki.read", attributes={"flowbreaker.sensitivity": "public"})
    assert other["sensitivity"] == "public"   # the attribute wins over the file's defaults
    assert call(m, "wiki.read")["sensitivity"] == "confidential"
    assert hr["operator_id"] == "team-default"


def test_the_first_matching_tool_table_wins(tmp_path):
    m = load_mapping(write(tmp_path, """
[[tool]]
match = ["gmail.send", "smtp.*"]
action = "send"
resource = "mail://outbox"

[[tool]]
match = "*"
resource = "other://x"
"""))
    assert call(m, "smtp.deliver")["resource"] == "mail://outbox"
    assert call(m, "gmail.send")["action"] == "send"
    assert call(m, "gmail.read")["resource"] == "other://x"


def test_paths_reach_into_arguments_result_and_attributes_with_prefix_measure_and_default(tmp_path):
    m = load_mapping(write(tmp_path, """
[[tool]]
match = "send_mail"
action = "send"
resource = { from = ["arguments.folder", "attributes.mail.box"], prefix = "mail://", default = "mail://outbox" }
destinations = { from = "arguments.to", prefix = "email:" }
records = { from = "arguments.attachments", measure = "length", default = 1 }
bytes = { from = "arguments.body", measure = "bytes" }
requested_by = { from = "result.sent_for.0.user" }
"""))
    ev = decode_event(call(m, "send_mail", arguments='{"to": ["a@x.example", "b@y.example"], "body": "hé",'
                                                       ' "attachments": ["f1", "f2", "f3"]}',
                           result={"sent_for": [{"user": "dana"}]}, attributes={"mail.box": "drafts"}))
    assert ev.destinations == ["email:a@x.example", "email:b@y.example"]
    assert (ev.records, ev.bytes, ev.resource, ev.requested_by) == (3, 3, "mail://drafts", "dana")
    bare = call(m, "send_mail", arguments={"to": "c@z.example"})
    assert (bare["destinations"], bare["records"], bare["resource"]) == (["email:c@z.example"], 1, "mail://outbox")


def test_numbers_from_paths_become_the_fields_types(tmp_path):
    m = load_mapping(write(tmp_path, """
[[tool]]
match = "*"
records = { from = "result.count" }
resource = { from = "arguments.id", prefix = "db://row/" }
operator_id = { from = "arguments.team" }
"""))
    ev = call(m, result={"count": "42"}, arguments={"id": "7", "team": 12})
    assert (ev["records"], ev["resource"], ev["operator_id"]) == (42, "db://row/7", "12")
    assert call(m, result={"count": 3.0})["records"] == 3


def test_a_value_of_the_wrong_type_is_refused_by_the_event_parser_naming_the_field(tmp_path):
    m = load_mapping(write(tmp_path, '[[tool]]\nmatch = "*"\nrecords = { from = "result.count" }\n'))
    with pytest.raises(EventError, match="records"):
        decode_event(call(m, result={"count": "many"}))
    with pytest.raises(EventError, match="action"):
        decode_event(call(load_mapping(None), attributes={"flowbreaker.action": "erase"}))


@pytest.mark.parametrize("text, reason", [
    ('colour = "blue"', "unknown key 'colour'"),
    ('[[tool]]\naction = "read"', r"tool\[0\].match: required"),
    ('[[tool]]\nmatch = "x"\naction = "erase"', r"tool\[0\].action: 'erase' is not one of read, write"),
    ('[[tool]]\nmatch = "x"\nrecords = -1', r"tool\[0\].records: must be an integer >= 0"),
    ('[[tool]]\nmatch = "x"\ndestinations = "email:x"', "must be a list of strings"),
    ('[[tool]]\nmatch = "x"\nresource = { from = "args.path" }', "must start with one of arguments, result"),
    ('[[tool]]\nmatch = "x"\nresource = { from = "arguments.p", count = true }', "unknown key 'count'"),
    ('[[tool]]\nmatch = "x"\nrecords = { from = "result", measure = "lines" }', "'measure' must be one of"),
    ('[defaults]\ncolor = 1', "defaults: unknown key 'color'"),
    ('tool = 3', "must be an array of tables"),
    ('[[tool]\nmatch=', "is not valid TOML"),
])
def test_a_mapping_file_that_cannot_work_is_refused_naming_the_file_and_key(tmp_path, text, reason):
    path = write(tmp_path, text)
    with pytest.raises(MappingError, match=reason) as err:
        load_mapping(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_mapping_file_is_a_usage_error(tmp_path):
    from detector.errors import UsageError
    with pytest.raises(UsageError, match="cannot read mapping file"):
        load_mapping(tmp_path / "nope.toml")


def test_the_call_is_not_changed_by_mapping_it():
    args, attrs = {"to": ["x"]}, {"flowbreaker.destinations": ["a", "b"]}
    m = mapping_from_dict({"tool": [{"match": "*", "destinations": {"from": "arguments.to", "prefix": "email:"}}]})
    call(m, arguments=args, attributes=attrs)
    assert args == {"to": ["x"]} and attrs == {"flowbreaker.destinations": ["a", "b"]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)
attr_keys = st.sampled_from(["flowbreaker.action", "flowbreaker.records", "flowbreaker.destinations",
                             "flowbreaker.resource", "flowbreaker.sensitivity", "flowbreaker.bytes", "enduser.id",
                             "flowbreaker.requested_by", "flowbreaker.operator_id"]) | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(tool=st.text(max_size=40), arguments=json_values | st.text(), result=json_values | st.binary(max_size=30),
       attributes=st.dictionaries(attr_keys, json_values, max_size=6))
def test_any_call_maps_to_an_event_that_decodes_or_is_refused_with_a_reason(tool, arguments, result, attributes):
    m = mapping_from_dict({"tool": [{"match": "*", "records": {"from": ["result.n", "arguments.0"]},
                                     "destinations": {"from": "arguments.to", "prefix": "x:"},
                                     "bytes": {"from": "result", "measure": "bytes"}}]})
    for mapping in (m, load_mapping(None)):
        ev = call(mapping, tool, arguments=arguments, result=result, attributes=attributes)
        try:
            decode_event(ev)
        except EventError as err:
            assert str(err)
