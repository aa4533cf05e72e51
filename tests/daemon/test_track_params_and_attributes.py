"""Per-track parameters, agent attribute overrides and the capabilities report."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sideman.daemon.params import (
    AGENT_TRACK_PARAMS,
    capabilities,
    check_attribute,
    coerce_track_param,
    known_attributes,
    supports_token_mask,
    track_param_defaults,
)
from sideman.daemon.protocol import ErrorCode, ProtocolError
from sideman.engine.vocab import EncoderConfig

YELLOW = EncoderConfig.yellow()
PY_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _with_mask_bar() -> EncoderConfig:
    data = YELLOW.to_dict()
    data["token_domains"] = data["token_domains"] + [["MaskBar", 1]]
    return EncoderConfig.from_dict(data)


def refused(call, *args):
    with pytest.raises(ProtocolError) as caught:
        call(*args)
    assert caught.value.code == ErrorCode.INVALID_PARAM
    return caught.value.message


# ---- per-track parameters ------------------------------------------------------------------------


def test_track_param_defaults():
    assert track_param_defaults(False) == {"ignore": False}
    assert track_param_defaults(True) == {"temperature": 1.0, "min_pitch": 0, "max_pitch": 127}


@pytest.mark.parametrize(
    ("value", "expected"), [("0", False), ("1", True), (0, False), ("on", True)]
)
def test_ignore_is_parsed_as_a_boolean(value, expected):
    assert coerce_track_param(False, "ignore", value) is expected


def test_temperature_on_a_conditioning_track_is_refused_with_a_reason():
    message = refused(coerce_track_param, False, "temperature", 1.2)
    assert message.startswith("temperature has no effect on a conditioning track")


def test_ignore_on_the_agent_is_a_parameter_error_not_an_unknown_track():
    assert "'ignore'" in refused(coerce_track_param, True, "ignore", 1)


def test_unknown_track_parameter_is_refused():
    assert "'colour'" in refused(coerce_track_param, True, "colour", 1)


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("temperature", 0.1, True),
        ("temperature", 5.0, True),
        ("temperature", 0.0, False),
        ("temperature", math.nan, False),
        ("min_pitch", 0, True),
        ("min_pitch", -1, False),
        ("max_pitch", 128, False),
        ("max_pitch", "72", True),
        ("max_pitch", 72.5, False),
    ],
)
def test_agent_track_parameter_ranges(name, value, accepted):
    if accepted:
        assert (
            type(coerce_track_param(True, name, value)) is PY_TYPES[AGENT_TRACK_PARAMS[name].kind]
        )
    else:
        assert f"'{name}'" in refused(coerce_track_param, True, name, value)


def test_pitch_range_must_not_be_inverted():
    current = {"temperature": 1.0, "min_pitch": 48, "max_pitch": 72}
    assert "min_pitch (80)" in refused(coerce_track_param, True, "min_pitch", 80, current)
    assert "max_pitch (40)" in refused(coerce_track_param, True, "max_pitch", 40, current)
    assert coerce_track_param(True, "max_pitch", 48, current) == 48


@settings(max_examples=200, deadline=None)
@given(
    is_agent=st.booleans(),
    name=st.one_of(
        st.sampled_from(["ignore", "temperature", "min_pitch", "max_pitch"]), st.text(max_size=6)
    ),
    value=st.one_of(
        st.integers(-5, 200),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.sampled_from(["0", "1", "true", "72", "2.5", "nan", ""]),
        st.none(),
        st.binary(max_size=3),
    ),
)
def test_track_params_return_typed_values_or_error_4(is_agent, name, value):
    try:
        converted = coerce_track_param(is_agent, name, value, track_param_defaults(is_agent))
    except ProtocolError as error:
        assert error.code == ErrorCode.INVALID_PARAM
        return
    table = AGENT_TRACK_PARAMS if is_agent else {"ignore": None}
    assert name in table
    assert type(converted) in (bool, int, float)


# ---- attributes and capabilities -----------------------------------------------------------------


def test_yellow_attributes_are_the_five_known_ones():
    assert set(known_attributes(YELLOW)) == {
        "note_density",
        "min_polyphony",
        "max_polyphony",
        "min_note_duration",
        "max_note_duration",
    }


def test_unknown_attribute_lists_the_known_ones():
    message = refused(check_attribute, "tension", 1, YELLOW, False)
    assert "tension" in message and "max_polyphony" in message


def test_note_density_is_for_drum_agents_only():
    assert "drum" in refused(check_attribute, "note_density", 3, YELLOW, False)
    check_attribute("note_density", 3, YELLOW, True)


@pytest.mark.parametrize(
    "name", ["min_polyphony", "max_polyphony", "min_note_duration", "max_note_duration"]
)
def test_polyphony_and_duration_are_for_melodic_agents_only(name):
    assert "melodic" in refused(check_attribute, name, 1, YELLOW, True)
    check_attribute(name, 1, YELLOW, False)


def test_track_type_is_not_checked_before_an_agent_exists():
    check_attribute("note_density", 3, YELLOW, None)
    check_attribute("max_polyphony", 3, YELLOW, None)


@pytest.mark.parametrize(
    ("name", "top"),
    [
        ("max_polyphony", 9),
        ("min_polyphony", 9),
        ("min_note_duration", 5),
        ("max_note_duration", 5),
    ],
)
def test_attribute_levels_stop_below_the_vocabulary_size(name, top):
    check_attribute(name, top, YELLOW, False)
    assert f"0..{top}" in refused(check_attribute, name, top + 1, YELLOW, False)


def test_negative_level_removes_without_any_check():
    check_attribute("tension", -1, YELLOW, True)
    check_attribute("note_density", -5, YELLOW, False)


@settings(max_examples=200, deadline=None)
@given(
    name=st.one_of(st.sampled_from(["tension", *known_attributes(YELLOW)]), st.text(max_size=5)),
    level=st.integers(-3, 12),
    agent_is_drum=st.one_of(st.none(), st.booleans()),
)
def test_check_attribute_accepts_or_raises_error_4(name, level, agent_is_drum):
    try:
        check_attribute(name, level, YELLOW, agent_is_drum)
    except ProtocolError as error:
        assert error.code == ErrorCode.INVALID_PARAM
        assert level >= 0


def test_capabilities_for_yellow_match_the_reference_except_attention_approx():
    assert capabilities(YELLOW) == {
        "tension": False,
        "note_density": True,
        "min_polyphony": True,
        "max_polyphony": True,
        "min_note_duration": True,
        "max_note_duration": True,
        "supports_token_mask": False,
        "supports_attention_mask": True,
        "supports_attention_approx": False,
        "supports_attention_skip": True,
        "supports_remove": True,
    }
    assert list(capabilities(YELLOW))[:7] == [
        "tension",
        "note_density",
        "min_polyphony",
        "max_polyphony",
        "min_note_duration",
        "max_note_duration",
        "supports_token_mask",
    ]


def test_token_mask_support_follows_the_vocabulary():
    assert supports_token_mask(YELLOW) is False
    masked = _with_mask_bar()
    assert supports_token_mask(masked) is True
    assert capabilities(masked)["supports_token_mask"] is True
