"""Generation requests: JSON shape, exact types, and every validation rule naming its field."""

import copy
import json
import math
import pickle

import pytest

from sideman.engine.request import (
    GenerationRequest,
    InferenceConfig,
    RequestError,
    TrackPrompt,
)
from sideman.engine.score import Score, TrackInfo
from sideman.engine.vocab import EncoderConfig

YELLOW = EncoderConfig.yellow()


def score(n_bars=8, *drum_flags):
    return Score.empty(n_bars, [TrackInfo(is_drum=flag) for flag in (drum_flags or (False, True))])


def request_dict(track=None, config=None, extra_tracks=()):
    track = {"id": 0, "bars": [4, 5]} | (track or {})
    return {"tracks": [track, *extra_tracks], "config": config or {}}


def parse_error(track=None, config=None, extra_tracks=()):
    with pytest.raises(RequestError) as error:
        GenerationRequest.from_dict(request_dict(track, config, extra_tracks))
    return error.value


def validate_error(track=None, config=None, extra_tracks=(), on=None):
    request = GenerationRequest.from_dict(request_dict(track, config, extra_tracks))
    with pytest.raises(RequestError) as error:
        request.validate(on or score(), YELLOW)
    return error.value


FULL = {
    "tracks": [
        {
            "id": 0,
            "bars": [6, 7],
            "autoregressive": True,
            "ignore": False,
            "mask_bars": [],
            "attributes": {"min_polyphony": 1, "max_note_duration": 5},
            "controls": {"time_signature": [4, 4]},
            "bar_attributes": {},
            "bar_controls": {"7": {"time_signature": [3, 4]}},
        },
        {
            "id": 1,
            "bars": [],
            "autoregressive": False,
            "ignore": False,
            "mask_bars": [6, 7],
            "attributes": {"note_density": 9},
            "controls": {},
            "bar_attributes": {},
            "bar_controls": {},
        },
    ],
    "config": InferenceConfig(model_dim=8, top_p=0.9, mask_p=0.1, seed=3).to_dict(),
}


# ---- JSON shape ------------------------------------------------------------------------------


def test_round_trip_through_json():
    request = GenerationRequest.from_dict(json.loads(json.dumps(FULL)))
    assert request.to_dict() == FULL
    assert GenerationRequest.from_dict(request.to_dict()) == request
    request.validate(score(8), YELLOW)


def test_http_api_example_parses_with_defaults():
    request = GenerationRequest.from_dict(
        {"tracks": [{"id": 0, "bars": [0, 1, 2, 3]}], "config": {"model_dim": 4}}
    )
    assert request.tracks == (TrackPrompt(0, bars=(0, 1, 2, 3)),)
    assert request.config == InferenceConfig()
    request.validate(score(4, False), YELLOW)


def test_lists_become_tuples_and_string_bar_keys_become_ints():
    prompt = TrackPrompt.from_dict(
        {"id": 0, "bars": [2], "bar_controls": {"2": {"time_signature": [3, 4]}}}
    )
    assert prompt.bars == (2,)
    assert prompt.bar_controls == {2: {"time_signature": (3, 4)}}


def test_requests_are_immutable_hashable_and_picklable():
    request = GenerationRequest.from_dict(FULL)
    with pytest.raises(AttributeError):
        request.tracks[0].bars = (1,)
    with pytest.raises(TypeError):
        request.tracks[0].attributes["min_polyphony"] = 3
    assert hash(request) == hash(GenerationRequest.from_dict(FULL))
    assert pickle.loads(pickle.dumps(request)) == request
    assert copy.deepcopy(request) == request


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tracks": [{"id": 0, "bars": [0]}], "confg": {}}, "confg"),
        ({"tracks": [{"id": 0, "bars": [0], "bar": [1]}]}, "tracks[0].bar"),
        ({"tracks": [{"id": 0, "bars": [0]}], "config": {"temprature": 1.0}}, "config.temprature"),
    ],
)
def test_unknown_field_is_named(data, field):
    with pytest.raises(RequestError, match="unknown field") as error:
        GenerationRequest.from_dict(data)
    assert error.value.field == field


def test_unknown_field_suggests_the_close_name():
    error = parse_error(config={"temprature": 1.0})
    assert "did you mean 'temperature'" in str(error)


def test_missing_tracks_and_id_are_named():
    with pytest.raises(RequestError) as error:
        GenerationRequest.from_dict({"config": {}})
    assert error.value.field == "tracks"
    with pytest.raises(RequestError) as error:
        GenerationRequest.from_dict({"tracks": [{"bars": [0]}]})
    assert error.value.field == "tracks[0].id"


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        ({"top_k": True}, "config.top_k", "expected an int, got bool"),
        ({"model_dim": 4.0}, "config.model_dim", "expected an int, got float"),
        ({"temperature": "1.0"}, "config.temperature", "expected a number, got str"),
        ({"temperature": False}, "config.temperature", "expected a number, got bool"),
        ({"novelty_check": 1}, "config.novelty_check", "expected true or false, got int"),
        ({"seed": "7"}, "config.seed", "expected an int, got str"),
        ({"mask_mode": 1}, "config.mask_mode", "expected a string"),
    ],
)
def test_wrong_config_types_are_named(config, field, expected):
    error = parse_error(config=config)
    assert error.field == field
    assert expected in error.message


@pytest.mark.parametrize(
    ("track", "field", "expected"),
    [
        ({"id": True}, "tracks[0].id", "expected an int, got bool"),
        ({"bars": "4"}, "tracks[0].bars", "expected a list"),
        ({"bars": [4, 5.0]}, "tracks[0].bars[1]", "expected an int, got float"),
        ({"autoregressive": "false"}, "tracks[0].autoregressive", "expected true or false"),
        (
            {"attributes": {"min_polyphony": 1.5}},
            "tracks[0].attributes.min_polyphony",
            "expected an int",
        ),
        ({"attributes": [1]}, "tracks[0].attributes", "expected an object"),
        ({"bar_attributes": {"x": {}}}, "tracks[0].bar_attributes", "keys must be bar indices"),
    ],
)
def test_wrong_track_types_are_named(track, field, expected):
    error = parse_error(track=track)
    assert error.field == field
    assert expected in error.message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", ["temperature", "top_p", "mask_p", "temperature_escalation"])
def test_non_finite_numbers_are_refused(name, value):
    error = parse_error(config={name: value})
    assert error.field == f"config.{name}"
    assert "finite" in error.message


def test_non_finite_from_json_text_is_refused():
    data = json.loads('{"tracks": [{"id": 0, "bars": [0]}], "config": {"temperature": NaN}}')
    with pytest.raises(RequestError, match="config.temperature: must be a finite number"):
        GenerationRequest.from_dict(data)


def test_ints_are_accepted_for_floats():
    assert (
        GenerationRequest.from_dict(request_dict(config={"temperature": 2})).config.temperature
        == 2.0
    )


# ---- config rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        ({"temperature": 0.0}, "temperature", "must be > 0"),
        ({"temperature": -1.0}, "temperature", "must be > 0"),
        ({"top_p": 0.0}, "top_p", "must be in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "top_p", "must be in (0, 1]"),
        ({"mask_p": 1.0}, "mask_p", "must be in [0, 1)"),
        ({"mask_p": -0.1}, "mask_p", "must be in [0, 1)"),
        ({"top_p": 0.5, "mask_p": 0.5}, "mask_p", "must be < top_p"),
        ({"top_k": 5, "mask_k": 5}, "mask_k", "must be < top_k"),
        ({"top_k": -1}, "top_k", "must be >= 0"),
        ({"mask_k": -1}, "mask_k", "must be >= 0"),
        ({"temperature_escalation": 0.5}, "temperature_escalation", "must be >= 1"),
        ({"max_attempts": 0}, "max_attempts", "must be >= 1"),
        ({"num_candidates": 0}, "num_candidates", "must be in [1, 16]"),
        ({"num_candidates": 17}, "num_candidates", "must be in [1, 16]"),
        ({"bars_per_step": 0}, "bars_per_step", "must be in [1, model_dim=4]"),
        ({"bars_per_step": 5}, "bars_per_step", "must be in [1, model_dim=4]"),
        ({"model_dim": 0}, "model_dim", "must be >= 1"),
        ({"tracks_per_step": 0}, "tracks_per_step", "must be >= 1"),
        ({"mask_mode": "attention_approx"}, "mask_mode", "must be one of"),
        ({"polyphony_hard_limit": -1}, "polyphony_hard_limit", "must be >= 0"),
        ({"density_hard_limit": -1}, "density_hard_limit", "must be >= 0"),
        ({"max_new_tokens": -1}, "max_new_tokens", "must be >= 0"),
        ({"device": "tpu"}, "device", "must be one of ['auto', 'cpu', 'cuda', 'mps']"),
    ],
)
def test_config_rule(config, field, expected):
    error = parse_error(config=config)
    assert error.field == f"config.{field}"
    assert expected in error.message
    with pytest.raises(RequestError) as direct:
        InferenceConfig(**config)
    assert direct.value.field == field


def test_top_p_error_message_reads_as_documented():
    assert str(parse_error(config={"top_p": 0.0})) == "config.top_p: must be in (0, 1], got 0.0"


def test_filter_pairs_that_are_allowed():
    InferenceConfig(top_p=1.0, mask_p=0.9)  # top_p off: mask_p alone
    InferenceConfig(top_k=0, mask_k=5)  # top_k off: mask_k alone
    InferenceConfig(top_k=5, mask_k=4)


def test_temperature_escalation_is_clamped_to_three_not_refused():
    assert InferenceConfig(temperature_escalation=10.0).temperature_escalation == 3.0
    assert InferenceConfig(temperature_escalation=2.5).temperature_escalation == 2.5


def test_seed_may_be_negative():
    assert InferenceConfig(seed=-1).seed == -1


def test_model_dim_must_be_in_num_bars_map():
    error = validate_error(config={"model_dim": 6, "bars_per_step": 1}, on=score(8))
    assert error.field == "config.model_dim"
    assert "[4, 8]" in error.message


def test_score_must_have_model_dim_bars():
    error = validate_error(track={"bars": [0]}, config={"model_dim": 8}, on=score(6))
    assert error.field == "config.model_dim"
    assert "6 bars" in error.message


def test_token_mask_mode_needs_mask_bar_and_suggests_attention():
    error = validate_error(config={"mask_mode": "token"})
    assert error.field == "config.mask_mode"
    assert "MaskBar" in error.message and "'attention'" in error.message


# ---- track rules -------------------------------------------------------------------------------


def test_track_id_outside_the_score():
    error = validate_error(track={"id": 2})
    assert error.field == "tracks[0].id"
    assert "outside the score's 2 tracks" in error.message


def test_negative_track_id():
    assert parse_error(track={"id": -1}).field == "tracks[0].id"


def test_duplicate_track_ids():
    error = parse_error(extra_tracks=[{"id": 0}])
    assert error.field == "tracks[1].id"
    assert "already has a prompt (tracks[0])" in error.message


def test_bar_outside_the_score():
    error = validate_error(track={"bars": [4, 12]})
    assert str(error) == "tracks[0].bars[1]: bar 12 outside the score's 8 bars"


def test_negative_bar():
    assert parse_error(track={"bars": [-1]}).field == "tracks[0].bars[0]"


def test_duplicate_bar():
    error = parse_error(track={"bars": [4, 5, 4]})
    assert error.field == "tracks[0].bars[2]"
    assert "listed twice" in error.message


def test_ignored_track_with_bars_to_generate():
    error = parse_error(extra_tracks=[{"id": 1, "bars": [2], "ignore": True}])
    assert error.field == "tracks[1].ignore"


def test_ignored_track_without_bars_is_fine():
    GenerationRequest.from_dict(request_dict(extra_tracks=[{"id": 1, "ignore": True}])).validate(
        score(), YELLOW
    )


def test_at_least_one_track_must_have_bars():
    with pytest.raises(RequestError) as error:
        GenerationRequest.from_dict({"tracks": [{"id": 0}, {"id": 1, "mask_bars": [3]}]})
    assert error.value.field == "tracks"
    assert "no track has bars to generate" in error.value.message


def test_mask_bar_outside_the_score():
    error = validate_error(extra_tracks=[{"id": 1, "mask_bars": [3, 8]}])
    assert error.field == "tracks[1].mask_bars[1]"


def test_mask_bar_overlapping_a_bar_to_generate():
    error = parse_error(track={"mask_bars": [3, 5]})
    assert error.field == "tracks[0].mask_bars[1]"
    assert "also a bar to generate" in error.message


# ---- attributes and controls -------------------------------------------------------------------


def test_unknown_attribute():
    error = validate_error(track={"attributes": {"tension": 1}})
    assert error.field == "tracks[0].attributes.tension"
    assert "unknown attribute" in error.message


def test_drum_attribute_on_a_melodic_track():
    error = validate_error(track={"attributes": {"note_density": 3}})
    assert error.field == "tracks[0].attributes.note_density"
    assert "drum tracks only" in error.message


def test_melodic_attribute_on_a_drum_track():
    error = validate_error(track={"id": 1, "attributes": {"max_polyphony": 3}})
    assert error.field == "tracks[0].attributes.max_polyphony"
    assert "melodic tracks only" in error.message


@pytest.mark.parametrize(
    ("track_id", "name", "size"),
    [
        (0, "min_polyphony", 10),
        (0, "max_polyphony", 10),
        (0, "min_note_duration", 6),
        (0, "max_note_duration", 6),
        (1, "note_density", 10),
    ],
)
def test_attribute_level_must_be_below_its_vocabulary_size(track_id, name, size):
    GenerationRequest.from_dict(
        request_dict(track={"id": track_id, "attributes": {name: size - 1}})
    ).validate(score(), YELLOW)
    error = validate_error(track={"id": track_id, "attributes": {name: size}})
    assert error.field == f"tracks[0].attributes.{name}"
    assert f"0..{size - 1}" in error.message


def test_negative_attribute_level():
    assert (
        parse_error(track={"attributes": {"min_polyphony": -1}}).field
        == "tracks[0].attributes.min_polyphony"
    )


def test_bar_attribute_key_must_be_a_bar_to_generate():
    error = parse_error(track={"bar_attributes": {"3": {"min_polyphony": 1}}})
    assert error.field == "tracks[0].bar_attributes[3]"
    assert "not one of this track's bars to generate" in error.message


def test_bar_control_key_must_be_a_bar_to_generate():
    error = parse_error(track={"bar_controls": {"6": {"time_signature": [3, 4]}}})
    assert error.field == "tracks[0].bar_controls[6]"


def test_yellow_has_no_bar_level_attributes():
    error = validate_error(track={"bar_attributes": {"4": {"min_polyphony": 1}}})
    assert error.field == "tracks[0].bar_attributes[4].min_polyphony"
    assert "track-level attribute" in error.message


def test_unknown_control_name():
    error = parse_error(track={"controls": {"tempo": 120}})
    assert error.field == "tracks[0].controls.tempo"
    assert "unknown control" in error.message


@pytest.mark.parametrize("value", [[4], "4/4", [4, 0], [4.0, 4]])
def test_malformed_time_signature_control(value):
    assert parse_error(track={"controls": {"time_signature": value}}).field.startswith(
        "tracks[0].controls.time_signature"
    )


def test_time_signature_control_must_be_in_the_vocabulary():
    error = validate_error(track={"controls": {"time_signature": [4, 3]}})
    assert error.field == "tracks[0].controls.time_signature"
    assert "4/3" in error.message
    error = validate_error(track={"bar_controls": {"5": {"time_signature": [4, 3]}}})
    assert error.field == "tracks[0].bar_controls[5].time_signature"
