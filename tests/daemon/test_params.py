"""Runtime parameters: coercion, checkpoint-aware validation, one-shot values, attributes."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sideman.daemon.params import (
    GLOBAL_PARAMS,
    ParamStore,
    check_consistency,
)
from sideman.daemon.protocol import ErrorCode, ProtocolError
from sideman.engine.request import InferenceConfig
from sideman.engine.vocab import EncoderConfig

YELLOW = EncoderConfig.yellow()


def _with_mask_bar() -> EncoderConfig:
    data = YELLOW.to_dict()
    data["token_domains"] = data["token_domains"] + [["MaskBar", 1]]
    return EncoderConfig.from_dict(data)


MASKED = _with_mask_bar()


@pytest.fixture
def store():
    return ParamStore.for_encoder(YELLOW)


def refused(call, *args):
    with pytest.raises(ProtocolError) as caught:
        call(*args)
    assert caught.value.code == ErrorCode.INVALID_PARAM
    return caught.value.message


# ---- defaults ------------------------------------------------------------------------------------

# osc-protocol.md §12.2 defaults (mask_mode comes from capabilities; num_candidates is new).
REFERENCE_DEFAULTS = {
    "lookahead_bars": 1,
    "buffer_bars": 4,
    "num_anticipated_bars": 1,
    "temperature": 1.0,
    "model_dim": 8,
    "top_p": 1.0,
    "top_k": 0,
    "mask_p": 0.0,
    "mask_k": 0,
    "temperature_escalation": 1.0,
    "novelty_check": True,
    "silence_check": True,
    "sampling_seed": -1,
    "adapt_buffer": True,
    "gen_timeout": 0.0,
    "max_attempts": 3,
    "warmup_policy": "a_empty",
    "polyphony_hard_limit": 0,
    "density_hard_limit": 0,
}


def test_defaults_follow_the_reference_table(store):
    values = store.values()
    assert {name: values[name] for name in REFERENCE_DEFAULTS} == REFERENCE_DEFAULTS
    assert values["num_candidates"] == 3
    assert list(values) == list(GLOBAL_PARAMS)


def test_structural_parameters_are_flagged():
    structural = {name for name, spec in GLOBAL_PARAMS.items() if spec.structural}
    assert structural == {
        "model_dim",
        "buffer_bars",
        "lookahead_bars",
        "num_anticipated_bars",
        "adapt_buffer",
        "warmup_policy",
        "max_agents",
    }


def test_default_mask_mode_is_attention_without_a_mask_bar_token(store):
    assert store.values()["mask_mode"] == "attention"


def test_default_mask_mode_is_token_when_the_vocabulary_has_mask_bar():
    assert ParamStore.for_encoder(MASKED).values()["mask_mode"] == "token"


def test_default_model_dim_falls_back_to_the_largest_window_when_8_is_missing():
    assert ParamStore((4,), False, {"buffer_bars": 2}).values()["model_dim"] == 4


# ---- coercion ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word", ["true", "TRUE", "1", "t", "T", "yes", "On", " true ", True, 1, 1.0]
)
def test_boolean_true_spellings(store, word):
    store.set("adapt_buffer", False)
    assert store.set("adapt_buffer", word) is True
    assert store.values()["adapt_buffer"] is True


@pytest.mark.parametrize("word", ["false", "False", "0", "f", "F", "no", "OFF", False, 0, 0.0])
def test_boolean_false_spellings(store, word):
    assert store.set("novelty_check", word) is False


@pytest.mark.parametrize("word", ["maybe", "", 2, 0.5, -1, None, b"true", math.nan])
def test_other_boolean_values_are_refused(store, word):
    assert "'silence_check'" in refused(store.set, "silence_check", word)
    assert store.values()["silence_check"] is True


@pytest.mark.parametrize(
    ("value", "expected"), [(2, 2), (2.0, 2), ("2", 2), (" 3 ", 3), ("2.0", 2)]
)
def test_int_parameters_accept_integral_values(store, value, expected):
    result = store.set("lookahead_bars", value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [2.5, 2.9, "2.5", "two", True, math.inf, math.nan, None])
def test_int_parameters_refuse_non_integral_values(store, value):
    message = refused(store.set, "lookahead_bars", value)
    assert "'lookahead_bars'" in message
    assert store.values()["lookahead_bars"] == 1


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), ("0.5", 0.5), (0.75, 0.75)])
def test_float_parameters_accept_numbers_and_numeric_strings(store, value, expected):
    result = store.set("temperature", value)
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf", 10**400, True])
def test_float_parameters_refuse_non_finite_values(store, value):
    assert "'temperature'" in refused(store.set, "temperature", value)
    assert store.values()["temperature"] == 1.0


def test_gen_timeout_must_be_finite_and_not_negative(store):
    assert store.set("gen_timeout", 0) == 0.0
    assert store.set("gen_timeout", 2.5) == 2.5
    refused(store.set, "gen_timeout", math.inf)
    refused(store.set, "gen_timeout", -0.1)


@pytest.mark.parametrize(
    ("name", "bad", "good"),
    [
        ("temperature", 0.05, 0.1),
        ("temperature", 5.1, 5.0),
        ("top_p", 0.0, 1.0),
        ("top_p", 1.01, 0.01),
        ("mask_p", 1.0, 0.0),
        ("mask_p", -0.1, 0.99),
        ("temperature_escalation", 0.9, 1.0),
        ("temperature_escalation", 3.1, 3.0),
        ("max_attempts", 0, 10),
        ("max_attempts", 11, 1),
        ("num_candidates", 0, 1),
        ("num_candidates", 9, 8),
        ("buffer_bars", 1, 2),
        ("lookahead_bars", 0, 1),
        ("top_k", -1, 10000),
        ("polyphony_hard_limit", 129, 128),
        ("density_hard_limit", 1001, 1000),
        ("sampling_seed", -2, 0),
    ],
)
def test_ranges_are_enforced(store, name, bad, good):
    message = refused(store.set, name, bad)
    assert f"'{name}'" in message and "must be" in message
    assert store.set(name, good) == good


def test_model_dim_must_be_a_checkpoint_window_size(store):
    message = refused(store.set, "model_dim", 6)
    assert "[4, 8]" in message
    assert store.values()["model_dim"] == 8
    assert store.set("model_dim", "4") == 4


def test_mask_mode_attention_approx_is_refused_naming_the_supported_modes(store):
    message = refused(store.set, "mask_mode", "attention_approx")
    assert "attention, attention_skip, remove" in message


def test_mask_mode_token_is_refused_without_mask_bar(store):
    message = refused(store.set, "mask_mode", "token")
    assert "MaskBar" in message
    assert store.values()["mask_mode"] == "attention"


def test_mask_mode_token_is_accepted_with_mask_bar():
    masked = ParamStore.for_encoder(MASKED)
    masked.set("mask_mode", "remove")
    assert masked.set("mask_mode", "token") == "token"


def test_warmup_policy_choices(store):
    for policy in ("a_empty", "a_masked", "b", "b_collapse"):
        assert store.set("warmup_policy", policy) == policy
    assert "'warmup_policy'" in refused(store.set, "warmup_policy", "c")


def test_unknown_parameter_is_refused_with_a_suggestion(store):
    assert "did you mean 'temperature'" in refused(store.set, "temprature", 1.0)
    assert "Unknown parameter: 'zzz'" in refused(store.set_once, "zzz", 1)
    assert "Unknown parameter" in refused(store.reset, "zzz")


# ---- rules across parameters ---------------------------------------------------------------------


def test_mask_p_must_stay_below_top_p(store):
    store.set("top_p", 0.5)
    assert "mask_p" in refused(store.set, "mask_p", 0.5)
    assert store.values()["mask_p"] == 0.0
    store.set("mask_p", 0.4)
    assert "top_p" in refused(store.set, "top_p", 0.3)


def test_mask_k_must_stay_below_top_k_when_both_are_on(store):
    store.set("top_k", 10)
    refused(store.set, "mask_k", 10)
    store.set("mask_k", 9)
    refused(store.set, "top_k", 5)
    assert store.set("top_k", 0) == 0


def test_lookahead_plus_anticipation_leaves_one_completed_bar(store):
    store.set("lookahead_bars", 4)
    store.set("num_anticipated_bars", 3)
    message = refused(store.set, "num_anticipated_bars", 4)
    assert "model_dim - 1 (7)" in message
    assert store.values()["num_anticipated_bars"] == 3


def test_buffer_must_fit_the_window(store):
    store.set("buffer_bars", 8)
    assert "buffer_bars (8) must be <= model_dim (4)" in refused(store.set, "model_dim", 4)
    store.set("buffer_bars", 4)
    assert store.set("model_dim", 4) == 4


def test_set_is_checked_against_the_one_shot_overlay_too(store):
    store.set_once("top_p", 0.5)
    refused(store.set, "mask_p", 0.6)
    assert store.values()["mask_p"] == 0.0


def test_set_is_checked_against_persistent_values_hidden_by_the_overlay(store):
    store.set("top_p", 0.5)
    store.set_once("top_p", 1.0)
    refused(store.set, "mask_p", 0.6)


def test_check_consistency_accepts_the_defaults(store):
    check_consistency(store.defaults())


# ---- one-shot values, reset and configured defaults ----------------------------------------------


def test_one_shot_value_is_visible_until_exactly_one_snapshot_consumes_it(store):
    store.set("temperature", 0.8)
    store.set_once("temperature", 1.5)
    assert store.values()["temperature"] == 1.5
    assert store.values()["temperature"] == 1.5
    assert store.pending_once() == {"temperature": 1.5}
    assert store.take_snapshot()["temperature"] == 1.5
    assert store.take_snapshot()["temperature"] == 0.8
    assert store.pending_once() == {}


def test_one_shot_set_after_a_snapshot_waits_for_the_next_one(store):
    store.take_snapshot()
    store.set_once("top_k", 20)
    assert store.take_snapshot()["top_k"] == 20


def test_snapshots_are_independent_copies(store):
    snapshot = store.take_snapshot()
    snapshot["temperature"] = 9.0
    store.values()["temperature"] = 9.0
    assert store.values()["temperature"] == 1.0


def test_configured_defaults_come_from_the_command_line():
    store = ParamStore.for_encoder(YELLOW, {"max_attempts": 5, "buffer_bars": "6", "model_dim": 8})
    assert store.defaults()["max_attempts"] == 5
    assert store.values()["buffer_bars"] == 6
    store.set("max_attempts", 2)
    assert store.reset("max_attempts") == 5
    assert store.values()["max_attempts"] == 5


def test_reset_drops_the_one_shot_value(store):
    store.set_once("temperature", 2.0)
    store.reset("temperature")
    assert store.values()["temperature"] == 1.0
    assert store.pending_once() == {}


def test_reset_that_would_break_a_rule_is_refused():
    store = ParamStore.for_encoder(YELLOW, {"lookahead_bars": 3})
    store.set("lookahead_bars", 1)
    store.set("model_dim", 4)
    refused(store.reset, "lookahead_bars")
    assert store.values()["lookahead_bars"] == 1


def test_reset_all_restores_configured_defaults_and_clears_one_shots():
    store = ParamStore.for_encoder(YELLOW, {"gen_timeout": 1.5})
    store.set("gen_timeout", 3)
    store.set("temperature", 2)
    store.set_once("top_k", 4)
    store.reset_all()
    assert store.values() == store.defaults()
    assert store.values()["gen_timeout"] == 1.5
    assert store.pending_once() == {}


@pytest.mark.parametrize(
    ("defaults", "named"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"model_dim": 6}, "model_dim"),
        ({"bogus": 1}, "bogus"),
        ({"mask_mode": "token"}, "mask_mode"),
        ({"lookahead_bars": 8}, "lookahead_bars"),
    ],
)
def test_invalid_configured_defaults_raise_value_error_naming_the_parameter(defaults, named):
    with pytest.raises(ValueError, match=named):
        ParamStore.for_encoder(YELLOW, defaults)


def test_empty_window_list_is_refused():
    with pytest.raises(ValueError, match="num_bars_map"):
        ParamStore((), False)


def test_describe_lists_every_parameter_with_its_range_and_state(store):
    store.set_once("temperature", 2.0)
    entries = {entry["name"]: entry for entry in store.describe()}
    assert list(entries) == list(GLOBAL_PARAMS)
    temperature = entries["temperature"]
    assert temperature["type"] == "float"
    assert (temperature["default"], temperature["value"], temperature["one_shot"]) == (
        1.0,
        2.0,
        True,
    )
    assert (temperature["lo"], temperature["hi"], temperature["structural"]) == (0.1, 5.0, False)
    assert entries["model_dim"]["choices"] == [4, 8]
    assert entries["model_dim"]["structural"] is True
    assert entries["mask_mode"]["choices"] == ["attention", "attention_skip", "remove"]
    assert entries["top_p"]["lo_open"] is True


# ---- properties ----------------------------------------------------------------------------------

param_values = st.one_of(
    st.integers(-20, 20000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1, 20),
    st.booleans(),
    st.sampled_from(["true", "off", "2", "2.5", "0.3", "nan", "token", "attention", "b", ""]),
    st.text(max_size=6),
    st.none(),
    st.binary(max_size=3),
)
param_names = st.one_of(st.sampled_from(list(GLOBAL_PARAMS)), st.text(max_size=6))
operations = st.lists(
    st.tuples(st.sampled_from(["set", "set_once", "reset", "snapshot"]), param_names, param_values),
    max_size=25,
)
PY_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _engine_config(values):
    return InferenceConfig(
        temperature=values["temperature"],
        top_k=values["top_k"],
        top_p=values["top_p"],
        mask_k=values["mask_k"],
        mask_p=values["mask_p"],
        model_dim=values["model_dim"],
        bars_per_step=values["num_anticipated_bars"],
        mask_mode=values["mask_mode"],
        polyphony_hard_limit=values["polyphony_hard_limit"],
        density_hard_limit=values["density_hard_limit"],
        seed=values["sampling_seed"],
        num_candidates=values["num_candidates"],
        max_attempts=values["max_attempts"],
        temperature_escalation=values["temperature_escalation"],
        novelty_check=values["novelty_check"],
        silence_check=values["silence_check"],
    )


@settings(max_examples=300, deadline=None)
@given(operations=operations, masked=st.booleans())
def test_any_sequence_of_changes_keeps_values_typed_consistent_and_engine_valid(operations, masked):
    store = ParamStore.for_encoder(MASKED if masked else YELLOW)
    for operation, name, value in operations:
        before = (store.values(), store.pending_once())
        try:
            if operation == "set":
                store.set(name, value)
            elif operation == "set_once":
                store.set_once(name, value)
            elif operation == "reset":
                store.reset(name)
            else:
                store.take_snapshot()
        except ProtocolError as error:
            assert error.code == ErrorCode.INVALID_PARAM
            assert (store.values(), store.pending_once()) == before
        _check_valid(store.values())
    _check_valid(store.take_snapshot())
    _check_valid(store.values())  # the persistent values, once the overlay is consumed


def _check_valid(values):
    check_consistency(values)
    for param, spec in GLOBAL_PARAMS.items():
        assert type(values[param]) is PY_TYPES[spec.kind]
    assert values["model_dim"] in YELLOW.num_bars_map
    _engine_config(values)  # raises RequestError if the engine would refuse these values
