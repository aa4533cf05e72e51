"""The OSC protocol table: addresses, argument orders, accepting states and argument validation."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sideman.daemon.protocol import (
    ANY_STATE,
    INBOUND,
    OUTBOUND,
    STATES,
    Arg,
    ErrorCode,
    MessageSpec,
    ProtocolError,
    check_outbound,
    check_state,
    contains_wildcard,
    describe_protocol,
    validate,
)

NOTE = INBOUND["/midigpt/note"]
BAR_END = INBOUND["/midigpt/bar/end"]

# osc-protocol.md §3, argument names in wire order.
REFERENCE_MESSAGES = {
    "/midigpt/session/init": ("session_name",),
    "/midigpt/session/start": (),
    "/midigpt/session/stop": (),
    "/midigpt/track/create": ("track_id", "instrument", "track_type", "is_agent"),
    "/midigpt/track/remove": ("track_id",),
    "/midigpt/track/set_ignore": ("track_id", "ignored"),
    "/midigpt/note": ("track_id", "pitch", "velocity", "onset", "duration", "bar_index"),
    "/midigpt/bar/end": ("bar_index", "ts_num", "ts_den"),
    "/midigpt/param/set": ("name", "value"),
    "/midigpt/param/set_once": ("name", "value"),
    "/midigpt/param/reset": ("name",),
    "/midigpt/param/reset_all": (),
    "/midigpt/track/param/set": ("track_id", "name", "value"),
    "/midigpt/attr/set": ("name", "level"),
    "/midigpt/attr/reset_all": (),
}

# §9.2 acceptance matrix: the states that accept each message.
UN, INIT, RUN, STOP = STATES
ACCEPTANCE = {
    "/midigpt/session/init": {UN, INIT, RUN, STOP},
    "/midigpt/session/start": {INIT},
    "/midigpt/session/stop": {UN, INIT, RUN, STOP},
    "/midigpt/session/end": {UN, INIT, RUN, STOP},
    "/midigpt/track/create": {INIT, RUN},
    "/midigpt/track/remove": {INIT, RUN},
    "/midigpt/track/set_ignore": {INIT, RUN},
    "/midigpt/note": {RUN},
    "/midigpt/bar/end": {RUN},
    "/midigpt/param/set": {UN, INIT, RUN, STOP},
    "/midigpt/param/set_once": {UN, INIT, RUN, STOP},
    "/midigpt/param/reset": {UN, INIT, RUN, STOP},
    "/midigpt/param/reset_all": {UN, INIT, RUN, STOP},
    "/midigpt/attr/set": {UN, INIT, RUN, STOP},
    "/midigpt/attr/reset_all": {UN, INIT, RUN, STOP},
    "/midigpt/track/param/set": {UN, INIT, RUN, STOP},
    "/midigpt/subscribe": {UN, INIT, RUN, STOP},
    "/midigpt/unsubscribe": {UN, INIT, RUN, STOP},
    "/midigpt/ping": {UN, INIT, RUN, STOP},
    "/midigpt/state/query": {UN, INIT, RUN, STOP},
    "/midigpt/tempo": {INIT, RUN},
    "/midigpt/session/save": {UN, INIT, RUN, STOP},
    "/midigpt/agent/cancel": {INIT, RUN},
    "/midigpt/agent/regenerate": {RUN},
    "/midigpt/agent/freeze": {INIT, RUN},
    "/midigpt/agent/mute": {INIT, RUN},
    "/midigpt/agent/played": {RUN},
    "/midigpt/meter": {INIT, RUN},
    "/midigpt/note/on": {RUN},
    "/midigpt/note/off": {RUN},
    "/midigpt/loop": {INIT, RUN},
    "/midigpt/loop/clear": {INIT, RUN},
    "/midigpt/session/load": {INIT},
    "/midigpt/attr/set_bar": {UN, INIT, RUN, STOP},
}


def refused(spec, args):
    with pytest.raises(ProtocolError) as caught:
        validate(spec, args)
    assert caught.value.code == ErrorCode.INVALID_PARAM
    assert caught.value.message.startswith(spec.address + ": ")
    return caught.value.message


# ---- the table ------------------------------------------------------------------------------------


def test_error_codes_are_numbered_as_the_reference():
    assert [(code.name, code.value) for code in ErrorCode] == [
        ("INVALID_STATE", 1),
        ("UNKNOWN_TRACK", 2),
        ("DUPLICATE_TRACK", 3),
        ("INVALID_PARAM", 4),
        ("GENERATION", 5),
        ("NO_AGENT", 6),
        ("MULTI_AGENT", 7),
        ("AGENT_NOTE", 8),
    ]


def test_protocol_error_carries_code_and_message():
    error = ProtocolError(ErrorCode.UNKNOWN_TRACK, "Unknown track ID: 9")
    assert error.code == 2 and type(error.code) is int
    assert error.message == "Unknown track ID: 9" == str(error)


@pytest.mark.parametrize("address", sorted(REFERENCE_MESSAGES))
def test_every_reference_message_keeps_its_argument_order(address):
    names = tuple(arg.name for arg in INBOUND[address].args)
    assert names[: len(REFERENCE_MESSAGES[address])] == REFERENCE_MESSAGES[address]


def test_session_init_takes_an_optional_name_then_an_optional_reply_port():
    args = INBOUND["/midigpt/session/init"].args
    assert [(a.name, a.kind, a.optional) for a in args] == [
        ("session_name", "str", True),
        ("reply_port", "int", True),
    ]


@pytest.mark.parametrize("address", sorted(ACCEPTANCE))
def test_acceptance_matrix_matches_the_spec(address):
    assert INBOUND[address].states == frozenset(ACCEPTANCE[address])


def test_table_holds_exactly_the_reference_messages_and_the_extensions():
    assert set(INBOUND) == set(ACCEPTANCE)


def test_session_end_is_handled_as_session_stop():
    assert INBOUND["/midigpt/session/end"].handler == INBOUND["/midigpt/session/stop"].handler


def test_every_spec_names_a_handler_and_an_example():
    for address, spec in INBOUND.items():
        assert spec.address == address
        assert spec.handler.isidentifier()
        assert spec.doc.startswith(address)


@pytest.mark.parametrize("state", STATES)
def test_check_state_refuses_with_code_1_and_the_reference_text(state):
    spec = INBOUND["/midigpt/session/start"]
    if state == "INITIALIZING":
        check_state(spec, state)
        return
    with pytest.raises(ProtocolError) as caught:
        check_state(spec, state)
    assert caught.value.code == ErrorCode.INVALID_STATE
    assert caught.value.message == f"Message not allowed in state '{state}'"


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="kind"):
        Arg("x", "double")


# ---- argument conversion -------------------------------------------------------------------------


def test_valid_note_returns_typed_values():
    values = validate(NOTE, [3, 60, 100, 0.25, 0.5, 12])
    assert values == (3, 60, 100, 0.25, 0.5, 12)
    assert [type(v) for v in values] == [int, int, int, float, float, int]


def test_integral_float_is_accepted_where_an_int_is_expected():
    values = validate(NOTE, [3.0, 60.0, 100.0, 0, 1, 12.0])
    assert values == (3, 60, 100, 0.0, 1.0, 12)
    assert [type(v) for v in values] == [int, int, int, float, float, int]


def test_non_integral_float_for_an_int_is_refused_not_truncated():
    message = refused(NOTE, [3, 60.9, 100, 0.0, 0.5, 0])
    assert message == "/midigpt/note: argument 'pitch' must be an integer, got 60.9"


def test_string_for_an_int_names_the_argument_and_the_type():
    message = refused(INBOUND["/midigpt/track/create"], [1, 0, "drum", 0])
    assert "'track_type'" in message and "string 'drum'" in message


def test_boolean_is_not_an_integer():
    message = refused(NOTE, [1, 60, True, 0.0, 0.5, 0])
    assert "'velocity'" in message and "boolean" in message


def test_boolean_is_not_a_number():
    assert "'onset'" in refused(NOTE, [1, 60, 100, False, 0.5, 0])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("position", [3, 4])
def test_non_finite_onset_or_duration_is_refused(bad, position):
    args = [1, 60, 100, 0.0, 0.5, 0]
    args[position] = bad
    message = refused(NOTE, args)
    assert f"'{NOTE.args[position].name}'" in message and "finite" in message


def test_velocity_zero_is_explained_as_a_note_off():
    message = refused(NOTE, [1, 60, 0, 0.0, 0.5, 0])
    assert message == (
        "/midigpt/note: velocity 0 is a note-off; send complete notes with velocity 1-127"
    )


@pytest.mark.parametrize(
    ("position", "value", "accepted"),
    [
        (1, 0, True),
        (1, 127, True),
        (1, -1, False),
        (1, 128, False),
        (2, 1, True),
        (2, 127, True),
        (2, 128, False),
        (2, -5, False),
        (3, 0.0, True),
        (3, 0.9999, True),
        (3, 1.0, False),
        (3, -0.01, False),
        (4, 0.0, False),
        (4, -0.5, False),
        (4, 1e-6, True),
        (4, 64.0, True),
        (4, 64.5, False),
        (5, 0, True),
        (5, -1, False),
        (5, 2**31 - 1, True),
        (5, 2**31, False),
        (0, -(2**31), True),
        (0, 2**31, False),
    ],
)
def test_note_ranges(position, value, accepted):
    args = [1, 60, 100, 0.0, 0.5, 0]
    args[position] = value
    if accepted:
        assert validate(NOTE, args)[position] == value
    else:
        assert f"'{NOTE.args[position].name}'" in refused(NOTE, args)


@pytest.mark.parametrize("args", [[-1, 4, 4], [0, 4, 0], [0, 0, 4], [0, 65, 4], [0, 4, 65]])
def test_bar_end_refuses_negative_bars_and_impossible_meters(args):
    refused(BAR_END, args)


def test_bar_end_leaves_meter_support_to_the_session():
    assert validate(BAR_END, [7, 5, 16]) == (7, 5, 16)


def test_missing_argument_names_the_first_one_missing():
    message = refused(NOTE, [1, 60])
    assert "missing argument 'velocity'" in message


def test_no_arguments_at_all_names_the_first_argument():
    assert "missing argument 'name'" in refused(INBOUND["/midigpt/param/set"], [])


def test_extra_arguments_are_ignored_and_dropped():
    assert validate(BAR_END, [3, 4, 4, "extra", 9]) == (3, 4, 4)
    assert validate(INBOUND["/midigpt/session/start"], [1, 2]) == ()


def test_missing_optional_arguments_are_none():
    assert validate(INBOUND["/midigpt/session/init"], []) == (None, None)
    assert validate(INBOUND["/midigpt/session/init"], ["set"]) == ("set", None)
    assert validate(INBOUND["/midigpt/ping"], []) == (None,)


def test_session_init_reply_port_is_a_udp_port():
    spec = INBOUND["/midigpt/session/init"]
    assert validate(spec, ["set", 7401]) == ("set", 7401)
    assert "'reply_port'" in refused(spec, ["set", 0])
    assert "'reply_port'" in refused(spec, ["set", 65536])


def test_session_name_must_be_a_string():
    assert "'session_name'" in refused(INBOUND["/midigpt/session/init"], [7401])


@pytest.mark.parametrize(
    ("bpm", "accepted"), [(20, True), (400.0, True), (19.9, False), (401, False)]
)
def test_tempo_range(bpm, accepted):
    spec = INBOUND["/midigpt/tempo"]
    if accepted:
        assert validate(spec, [bpm]) == (float(bpm),)
        assert type(validate(spec, [bpm])[0]) is float
    else:
        assert "'bpm'" in refused(spec, [bpm])


def test_integer_too_large_for_a_float_is_refused():
    assert "'bpm'" in refused(INBOUND["/midigpt/tempo"], [10**400])


def test_string_argument_refuses_blobs_and_numbers():
    spec = INBOUND["/midigpt/param/reset"]
    assert "'name'" in refused(spec, [b"temperature"])
    assert "'name'" in refused(spec, [3])


def test_any_argument_passes_the_value_through():
    value = ("midi", 1, 2, 3)
    assert validate(INBOUND["/midigpt/param/set"], ["temperature", value]) == ("temperature", value)


def test_level_may_be_negative_to_remove_an_override():
    assert validate(INBOUND["/midigpt/attr/set"], ["max_polyphony", -1]) == ("max_polyphony", -1)
    assert "'level'" in refused(INBOUND["/midigpt/attr/set"], ["max_polyphony", -math.inf])


def test_choices_are_enforced():
    spec = MessageSpec("/x", (Arg("mode", "str", choices=("a", "b")),), ANY_STATE, "x", "/x a")
    assert validate(spec, ["a"]) == ("a",)
    assert "one of a, b" in refused(spec, ["c"])


# ---- property: validate never raises anything but error 4 ----------------------------------------

osc_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63),
    st.integers(min_value=-3, max_value=130),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2, max_value=70),
    st.booleans(),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.none(),
    st.tuples(st.integers(0, 255), st.integers(0, 255)),
    st.lists(st.integers(), max_size=3),
)


def _in_range(arg, value):
    if arg.lo is not None:
        assert value > arg.lo if arg.lo_open else value >= arg.lo
    if arg.hi is not None:
        assert value < arg.hi if arg.hi_open else value <= arg.hi


@settings(max_examples=400, deadline=None)
@given(
    spec=st.sampled_from(sorted(INBOUND.values(), key=lambda s: s.address)),
    args=st.lists(osc_values, max_size=8),
)
def test_validate_returns_typed_values_or_error_4(spec, args):
    try:
        values = validate(spec, args)
    except ProtocolError as error:
        assert error.code == ErrorCode.INVALID_PARAM
        assert error.message.startswith(spec.address + ": ")
        return
    assert len(values) == len(spec.args)
    for arg, value in zip(spec.args, values, strict=True):
        if value is None and arg.optional:
            continue
        if arg.kind == "int":
            assert type(value) is int
            _in_range(arg, value)
        elif arg.kind == "float":
            assert type(value) is float and math.isfinite(value)
            _in_range(arg, value)
        elif arg.kind == "str":
            assert type(value) is str


@settings(max_examples=200, deadline=None)
@given(
    track_id=st.integers(-(2**31), 2**31 - 1),
    pitch=st.integers(0, 127),
    velocity=st.integers(1, 127),
    onset=st.floats(0, 1, exclude_max=True),
    duration=st.floats(0, 64, exclude_min=True),
    bar_index=st.integers(0, 2**31 - 1),
)
def test_every_valid_note_is_accepted_unchanged(
    track_id, pitch, velocity, onset, duration, bar_index
):
    args = [track_id, pitch, velocity, onset, duration, bar_index]
    assert validate(NOTE, args) == tuple(args)


# ---- outbound and listing ------------------------------------------------------------------------


def test_outbound_type_tags_follow_the_reference():
    assert OUTBOUND["/midigpt/generated/open"] == "iii"
    assert OUTBOUND["/midigpt/generated/note"] == "iiiiff"
    assert OUTBOUND["/midigpt/generated/close"] == "ii"
    assert OUTBOUND["/midigpt/generated/features"] == "iifffifiii"
    assert OUTBOUND["/midigpt/error"] == "is"
    for address in (
        "/midigpt/session/ready",
        "/midigpt/session/started",
        "/midigpt/session/stopped",
    ):
        assert OUTBOUND[address] == ""
    for address in ("/midigpt/capabilities", "/midigpt/prompt/state", "/midigpt/status"):
        assert OUTBOUND[address] == "s"


def test_outbound_extensions_are_declared():
    assert OUTBOUND["/midigpt/job"] == "s"
    assert OUTBOUND["/midigpt/state"] == "s"
    assert OUTBOUND["/midigpt/session/saved"] == "si"
    assert OUTBOUND["/midigpt/pong"] == "*"


def test_check_outbound_accepts_matching_arguments():
    check_outbound("/midigpt/generated/note", (1, 4, 60, 100, 0.25, 0.5))
    check_outbound("/midigpt/pong", ("anything",))
    check_outbound("/midigpt/session/ready", ())


@pytest.mark.parametrize(
    ("address", "args"),
    [
        ("/midigpt/generated/note", (1, 4, 60, 100, 0.25)),
        ("/midigpt/generated/note", (1, 4, 60, 100, 0.25, 1)),
        ("/midigpt/error", (True, "x")),
        ("/midigpt/status", (1,)),
        ("/midigpt/nope", ()),
    ],
)
def test_check_outbound_refuses_mismatches(address, args):
    with pytest.raises(ValueError):
        check_outbound(address, args)


@pytest.mark.parametrize(
    ("address", "pattern"),
    [
        ("/midigpt/session/*", True),
        ("/midigpt/note?", True),
        ("/midigpt/[ab]", True),
        ("/midigpt/{a,b}", True),
        ("/midigpt/note", False),
    ],
)
def test_wildcard_addresses_are_detected(address, pattern):
    assert contains_wildcard(address) is pattern


def test_describe_protocol_lists_every_message_with_arguments_states_and_usage():
    text = describe_protocol()
    for spec in INBOUND.values():
        assert spec.address in text
        assert spec.doc in text
    assert "onset:float [0, 1)" in text
    assert "duration:float (0, 64]" in text
    assert "[reply_port:int 1..65535]" in text
    assert "states: RUNNING" in text
    assert "/midigpt/generated/features iifffifiii" in text
