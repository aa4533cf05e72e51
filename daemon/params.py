"""Runtime parameters: global (§12.2), per-track (§12.3) and attribute overrides (§12.4).

Values arrive from OSC as ints, floats, strings or T/F, and are checked when they are set, against
the same rules the engine applies at generation time (engine/request.py), so a value the engine
would reject is refused at ``/param/set`` with error 4 instead of failing every bar with error 5
(osc-protocol.md §16 D23–D29, D63). Nothing is stored when a check fails.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sideman.daemon.protocol import INT32_MAX, ErrorCode, ProtocolError
from sideman.engine.request import BAR_ATTRIBUTE_NAMES, MASK_MODES
from sideman.engine.vocab import (
    ATTRIBUTE_TYPES,
    DRUM_ATTRIBUTES,
    MELODIC_ATTRIBUTES,
    EncoderConfig,
    TokenType,
)

TRUE_WORDS = frozenset({"true", "1", "t", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "f", "no", "off"})
# Attribute names that capabilities report, in the §5.1 key order.
CAPABILITY_ATTRIBUTES = (
    "tension",
    "note_density",
    "min_polyphony",
    "max_polyphony",
    "min_note_duration",
    "max_note_duration",
)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: type, default and accepted values.

    ``lo``/``hi`` are inclusive unless ``lo_open``/``hi_open``. ``structural`` parameters shape
    the window and the trigger; a client UI may lock them while a session runs.
    """

    name: str
    kind: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    structural: bool = False
    doc: str = ""
    lo_open: bool = False
    hi_open: bool = False

    def range_text(self) -> str:
        """The accepted values in words, for error messages and listings."""
        if self.choices is not None:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        if self.lo is None and self.hi is None:
            return "any value"
        if self.lo_open or self.hi_open or self.lo is None or self.hi is None:
            left = "(" if self.lo_open or self.lo is None else "["
            right = ")" if self.hi_open or self.hi is None else "]"
            lo = "-inf" if self.lo is None else _number(self.lo)
            hi = "inf" if self.hi is None else _number(self.hi)
            return f"in {left}{lo}, {hi}{right}"
        return f"in {_number(self.lo)}..{_number(self.hi)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _spec_table(*specs: ParamSpec, docs: Mapping[str, str]) -> dict[str, ParamSpec]:
    return {spec.name: replace(spec, doc=docs[spec.name]) for spec in specs}


_GLOBAL_DOCS = {
    "lookahead_bars": "k: bars from the playhead to the first generated bar",
    "buffer_bars": "B: bars accumulated before the first generation",
    "num_anticipated_bars": "j: bars generated per job",
    "temperature": "sampling temperature",
    "model_dim": "window width in bars (one of the checkpoint's num_bars_map)",
    "top_p": "nucleus threshold (1 = off)",
    "top_k": "keep the k most likely tokens (0 = off)",
    "mask_p": "remove the most likely probability mass (0 = off)",
    "mask_k": "remove the k most likely tokens (0 = off)",
    "temperature_escalation": "temperature multiplier per failed attempt",
    "novelty_check": "reject a candidate identical to the input; prefer one that repeats no context bar",
    "silence_check": "prefer a candidate with notes in the target bars",
    "sampling_seed": "seed per job from (seed, target bar); -1 = free-running",
    "adapt_buffer": "true: first trigger when p + k >= B; false: when p >= B",
    "gen_timeout": "seconds per job; 0 = deadline from the bar clock",
    "max_attempts": "attempts per planner step",
    "warmup_policy": "how the first jobs treat bars before the buffer fills",
    "mask_mode": "how masked (future or unknown) bars are represented",
    "polyphony_hard_limit": "cap on simultaneous onsets (0 = off)",
    "density_hard_limit": "cap on onsets per bar (0 = off)",
    "num_candidates": "candidates sampled in one batch per job",
    "max_agents": "agent tracks allowed; above 1 all agents are generated in one request",
    "heartbeat_s": "seconds between /midigpt/heartbeat messages to subscribers (0 = off)",
}
_WARMUP_POLICIES = ("a_empty", "a_masked", "b", "b_collapse")
MIN_HEARTBEAT_S = 0.1  # heartbeat_s is 0 (off) or at least this: beats are not a stream

# osc-protocol.md §12.2, tightened per §16. The store narrows model_dim to the checkpoint's
# num_bars_map and picks the mask_mode default from capabilities ("token" only with MaskBar, D29).
# gen_timeout is bounded: an unbounded timeout overflows timers (D4, D24).
GLOBAL_PARAMS: dict[str, ParamSpec] = _spec_table(
    ParamSpec("lookahead_bars", "int", 1, 1, 8, structural=True),
    ParamSpec("buffer_bars", "int", 4, 2, 64, structural=True),
    ParamSpec("num_anticipated_bars", "int", 1, 1, 8, structural=True),
    ParamSpec("temperature", "float", 1.0, 0.1, 5.0),
    ParamSpec("model_dim", "int", 8, 1, 16, structural=True),
    ParamSpec("top_p", "float", 1.0, 0.0, 1.0, lo_open=True),
    ParamSpec("top_k", "int", 0, 0, 10000),
    ParamSpec("mask_p", "float", 0.0, 0.0, 1.0, hi_open=True),
    ParamSpec("mask_k", "int", 0, 0, 10000),
    ParamSpec("temperature_escalation", "float", 1.0, 1.0, 3.0),
    ParamSpec("novelty_check", "bool", True),
    ParamSpec("silence_check", "bool", True),
    ParamSpec("sampling_seed", "int", -1, -1, INT32_MAX),
    ParamSpec("adapt_buffer", "bool", True, structural=True),
    ParamSpec("gen_timeout", "float", 0.0, 0.0, 3600.0),
    ParamSpec("max_attempts", "int", 3, 1, 10),
    ParamSpec("warmup_policy", "str", "a_empty", choices=_WARMUP_POLICIES, structural=True),
    ParamSpec("mask_mode", "str", "attention", choices=MASK_MODES),
    ParamSpec("polyphony_hard_limit", "int", 0, 0, 128),
    ParamSpec("density_hard_limit", "int", 0, 0, 1000),
    ParamSpec("num_candidates", "int", 3, 1, 8),
    ParamSpec("max_agents", "int", 1, 1, 4, structural=True),
    ParamSpec("heartbeat_s", "float", 0.0, 0.0, 60.0),
    docs=_GLOBAL_DOCS,
)

CONDITIONING_TRACK_PARAMS: dict[str, ParamSpec] = _spec_table(
    ParamSpec("ignore", "bool", False),
    docs={"ignore": "leave this track out of the prompt"},
)
AGENT_TRACK_PARAMS: dict[str, ParamSpec] = _spec_table(
    ParamSpec("temperature", "float", 1.0, 0.1, 5.0),
    ParamSpec("min_pitch", "int", 0, 0, 127),
    ParamSpec("max_pitch", "int", 127, 0, 127),
    docs={
        "temperature": "multiplies the global temperature",
        "min_pitch": "lowest pitch sent (octave-folded into range)",
        "max_pitch": "highest pitch sent (octave-folded into range)",
    },
)


# ---- coercion of one value -------------------------------------------------------------------------


def _refuse(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAM, message)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong(spec: ParamSpec, wanted: str, value: Any) -> ProtocolError:
    return _refuse(f"Parameter '{spec.name}' must be {wanted}, got {_shown(value)}")


def _to_bool(spec: ParamSpec, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise _wrong(spec, "a boolean (true/false, 1/0, T/F, yes/no, on/off)", value)


def _to_number(spec: ParamSpec, value: Any) -> int | float:
    """An int (kind int) or a finite float from an OSC number or a numeric string."""
    wanted = "an integer" if spec.kind == "int" else "a number"
    number: int | float
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                raise _wrong(spec, wanted, value) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    else:
        raise _wrong(spec, wanted, value)
    if spec.kind == "int":
        if isinstance(number, float):
            if not number.is_integer():  # also NaN and infinity
                raise _wrong(spec, wanted, value)
            number = int(number)
        return number
    try:
        number = float(number)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _wrong(spec, "a finite number", value)
    return number


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Convert an OSC value to ``spec``'s type and check its range; ProtocolError(4) if refused.

    Booleans accept true/false, 1/0, T/F, yes/no, on/off (any case), OSC T/F and the numbers 0/1.
    Ints accept integral floats and integer strings ("2", "2.0"), never 2.5 or a boolean.
    Floats accept numbers and numeric strings, never NaN, infinity or a boolean.
    """
    if spec.kind == "bool":
        return _to_bool(spec, value)
    if spec.kind == "str":
        if not isinstance(value, str):
            raise _wrong(spec, "a string", value)
        converted: Any = value
    else:
        converted = _to_number(spec, value)
        lo, hi = spec.lo, spec.hi
        below = lo is not None and (converted <= lo if spec.lo_open else converted < lo)
        above = hi is not None and (converted >= hi if spec.hi_open else converted > hi)
        if below or above:
            raise _wrong(spec, spec.range_text(), converted)
    if spec.choices is not None and converted not in spec.choices:
        raise _wrong(spec, spec.range_text(), value)
    return converted


def _unknown(name: str, known: Iterable[str], what: str) -> ProtocolError:
    known = list(known)
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else f"; known: {', '.join(known)}"
    return _refuse(f"Unknown {what}: '{name}'{suggestion}")


# ---- rules across parameters ------------------------------------------------------------------------


def check_consistency(values: Mapping[str, Any]) -> None:
    """Raise ProtocolError(4) when a full parameter set breaks a rule linking two parameters."""
    top_p, mask_p = values["top_p"], values["mask_p"]
    if top_p < 1 and mask_p >= top_p:
        raise _refuse(f"mask_p ({mask_p}) must be < top_p ({top_p}) when top_p < 1")
    top_k, mask_k = values["top_k"], values["mask_k"]
    if top_k > 0 and mask_k > 0 and mask_k >= top_k:
        raise _refuse(f"mask_k ({mask_k}) must be < top_k ({top_k}) when both are > 0")
    model_dim = values["model_dim"]
    lookahead, anticipated = values["lookahead_bars"], values["num_anticipated_bars"]
    if lookahead + anticipated > model_dim - 1:
        raise _refuse(
            f"lookahead_bars ({lookahead}) + num_anticipated_bars ({anticipated}) must be <= "
            f"model_dim - 1 ({model_dim - 1}), so the window keeps at least one completed bar"
        )
    if values["buffer_bars"] > model_dim:
        raise _refuse(f"buffer_bars ({values['buffer_bars']}) must be <= model_dim ({model_dim})")


# ---- the global parameter store -----------------------------------------------------------------------


class ParamStore:
    """Global parameters: configured defaults, persistent values and a one-shot overlay.

    The configured default of a parameter is its CLI value when given, else the table default
    (D39, D40); ``reset``/``reset_all`` restore it. One-shot values overlay the persistent ones
    until exactly one ``take_snapshot`` consumes them (D6). Every change is checked against the
    checkpoint (``model_dim`` in ``num_bars_map``, ``mask_mode token`` needs MaskBar) and the
    cross-parameter rules on the values that would result, persistent and merged; a refused change
    stores nothing. Not thread-safe: use it from the event loop only.
    """

    def __init__(
        self,
        num_bars_map: Sequence[int],
        supports_token_mask: bool,
        cli_defaults: Mapping[str, Any] | None = None,
    ):
        window_sizes = tuple(sorted({int(size) for size in num_bars_map}))
        if not window_sizes or window_sizes[0] < 1:
            raise ValueError(f"num_bars_map must list window sizes >= 1, got {list(num_bars_map)}")
        self.num_bars_map = window_sizes
        self.supports_token_mask = bool(supports_token_mask)
        self._specs = self._checkpoint_specs()
        defaults = {name: spec.default for name, spec in self._specs.items()}
        for name, value in (cli_defaults or {}).items():
            if name not in self._specs:
                raise ValueError(f"unknown parameter {name!r} in the configured defaults")
            try:
                defaults[name] = self._coerce(name, value)
            except ProtocolError as error:
                raise ValueError(f"configured default for {name!r}: {error.message}") from None
        try:
            check_consistency(defaults)
        except ProtocolError as error:
            raise ValueError(f"configured defaults are inconsistent: {error.message}") from None
        self._defaults = defaults
        self._persistent = dict(defaults)
        self._once: dict[str, Any] = {}

    @classmethod
    def for_encoder(
        cls, encoder_config: EncoderConfig, cli_defaults: Mapping[str, Any] | None = None
    ) -> ParamStore:
        """A store for a checkpoint's encoder config (its window sizes and MaskBar support)."""
        return cls(encoder_config.num_bars_map, supports_token_mask(encoder_config), cli_defaults)

    def _checkpoint_specs(self) -> dict[str, ParamSpec]:
        sizes = self.num_bars_map
        specs = dict(GLOBAL_PARAMS)
        specs["model_dim"] = replace(
            specs["model_dim"],
            default=8 if 8 in sizes else sizes[-1],
            lo=sizes[0],
            hi=sizes[-1],
            choices=sizes,
        )
        modes = tuple(m for m in MASK_MODES if m != "token" or self.supports_token_mask)
        specs["mask_mode"] = replace(
            specs["mask_mode"],
            default="token" if self.supports_token_mask else "attention",
            choices=modes,
        )
        return specs

    # ---- checks --------------------------------------------------------------------------------
    def spec(self, name: str) -> ParamSpec:
        """The spec of ``name`` for this checkpoint; ProtocolError(4) for an unknown name."""
        if not isinstance(name, str) or name not in self._specs:
            raise _unknown(str(name), self._specs, "parameter")
        return self._specs[name]

    def _coerce(self, name: str, value: Any) -> Any:
        spec = self.spec(name)
        if name == "model_dim":
            size = coerce(replace(spec, lo=1, hi=None, choices=None), value)
            if size not in (spec.choices or ()):
                raise _refuse(
                    f"Parameter 'model_dim' must be one of this checkpoint's window sizes "
                    f"{list(spec.choices or ())}, got {_shown(value)}"
                )
            return size
        if name == "heartbeat_s":
            seconds = coerce(spec, value)
            if 0 < seconds < MIN_HEARTBEAT_S:
                raise _refuse(
                    f"Parameter 'heartbeat_s' must be 0 (off) or in {MIN_HEARTBEAT_S}..60 seconds, "
                    f"got {_shown(value)}"
                )
            return seconds
        if name == "mask_mode" and value == "token" and not self.supports_token_mask:
            raise _refuse(
                "Parameter 'mask_mode': 'token' needs a MaskBar token, which this checkpoint's "
                f"vocabulary lacks; use one of {', '.join(spec.choices or ())}"
            )
        return coerce(spec, value)

    @staticmethod
    def _checked(name: str, value: Any, *candidates: Mapping[str, Any]) -> None:
        for values in candidates:
            try:
                check_consistency(values)
            except ProtocolError as error:
                raise _refuse(f"Cannot set {name} = {value!r}: {error.message}") from None

    # ---- changes ----------------------------------------------------------------------------------
    def set(self, name: str, value: Any) -> Any:
        """Store a persistent value; returns the converted value. Refused → ProtocolError(4)."""
        converted = self._coerce(name, value)
        persistent = {**self._persistent, name: converted}
        self._checked(name, converted, persistent, {**persistent, **self._once})
        self._persistent = persistent
        return converted

    def set_once(self, name: str, value: Any) -> Any:
        """Store a value for the next snapshot only; returns the converted value."""
        converted = self._coerce(name, value)
        once = {**self._once, name: converted}
        self._checked(name, converted, {**self._persistent, **once})
        self._once = once
        return converted

    def reset(self, name: str) -> Any:
        """Restore the configured default and drop any one-shot value; returns the default.

        Refused (error 4) when the default conflicts with the other current values, e.g. a
        default lookahead that no longer fits a smaller model_dim.
        """
        default = self._defaults[self.spec(name).name]
        persistent = {**self._persistent, name: default}
        once = {key: value for key, value in self._once.items() if key != name}
        self._checked(name, default, persistent, {**persistent, **once})
        self._persistent, self._once = persistent, once
        return default

    def reset_all(self) -> None:
        """Every parameter to its configured default; the one-shot overlay is cleared."""
        self._persistent = dict(self._defaults)
        self._once = {}

    # ---- reading ----------------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """Persistent values with the one-shot overlay merged over them (nothing consumed)."""
        return {**self._persistent, **self._once}

    def take_snapshot(self) -> dict[str, Any]:
        """The merged values for one job; the one-shot overlay is consumed here and only here."""
        snapshot = self.values()
        self._once = {}
        return snapshot

    def pending_once(self) -> dict[str, Any]:
        """The one-shot values waiting for the next snapshot."""
        return dict(self._once)

    def defaults(self) -> dict[str, Any]:
        """The configured defaults (CLI values over the table, mask_mode from capabilities)."""
        return dict(self._defaults)

    def specs(self) -> dict[str, ParamSpec]:
        """The specs as narrowed for this checkpoint (model_dim and mask_mode choices)."""
        return dict(self._specs)

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-ready entry per parameter, for listings, the state query and the monitor."""
        merged = self.values()
        return [
            {
                "name": spec.name,
                "type": spec.kind,
                "default": self._defaults[spec.name],
                "value": merged[spec.name],
                "one_shot": spec.name in self._once,
                "lo": spec.lo,
                "hi": spec.hi,
                "lo_open": spec.lo_open,
                "hi_open": spec.hi_open,
                "choices": list(spec.choices) if spec.choices is not None else None,
                "structural": spec.structural,
                "doc": spec.doc,
            }
            for spec in self._specs.values()
        ]


# ---- per-track parameters ---------------------------------------------------------------------------


def track_param_defaults(is_agent: bool) -> dict[str, Any]:
    """The per-track parameters a new track starts with."""
    table = AGENT_TRACK_PARAMS if is_agent else CONDITIONING_TRACK_PARAMS
    return {name: spec.default for name, spec in table.items()}


def coerce_track_param(
    is_agent: bool, name: str, value: Any, current: Mapping[str, Any] | None = None
) -> Any:
    """Convert and check a per-track parameter; ProtocolError(4) naming it when refused.

    With ``current`` (the track's present values) the agent pitch range is also checked:
    ``min_pitch`` <= ``max_pitch`` after the change.
    """
    if not is_agent and name == "temperature":
        raise _refuse(
            "temperature has no effect on a conditioning track; set it on the agent track"
        )
    table = AGENT_TRACK_PARAMS if is_agent else CONDITIONING_TRACK_PARAMS
    if name not in table:
        kind = "agent" if is_agent else "conditioning"
        raise _unknown(str(name), table, f"per-track parameter for a {kind} track")
    converted = coerce(table[name], value)
    if current is not None and name in ("min_pitch", "max_pitch"):
        pitches = {**track_param_defaults(True), **current, name: converted}
        if pitches["min_pitch"] > pitches["max_pitch"]:
            raise _refuse(
                f"min_pitch ({pitches['min_pitch']}) must be <= max_pitch ({pitches['max_pitch']})"
            )
    return converted


# ---- attributes and capabilities ----------------------------------------------------------------------


def supports_token_mask(encoder_config: EncoderConfig) -> bool:
    """Whether ``mask_mode token`` can run: the vocabulary has MaskBar (the engine's own test)."""
    return encoder_config.vocabulary.has(TokenType.MASK_BAR)


def known_attributes(encoder_config: EncoderConfig) -> tuple[str, ...]:
    """Attribute names this checkpoint can condition on (configured and in the vocabulary)."""
    vocabulary = encoder_config.vocabulary
    return tuple(
        name
        for name in encoder_config.attributes
        if name in ATTRIBUTE_TYPES and vocabulary.has(ATTRIBUTE_TYPES[name])
    )


def attribute_levels(encoder_config: EncoderConfig, name: str) -> int:
    """Number of levels of a known attribute (10 for yellow's, 6 for min/max_note_duration)."""
    return int(encoder_config.vocabulary.sizes[ATTRIBUTE_TYPES[name]])


def check_attribute(
    name: str, level: int, encoder_config: EncoderConfig, agent_is_drum: bool | None
) -> None:
    """Refuse (error 4) an agent attribute override the engine would reject (D27).

    ``level < 0`` removes an override and is never refused. ``agent_is_drum`` None means there is
    no agent yet, so the drum/melodic rule cannot be checked now.
    """
    if level < 0:
        return
    known = known_attributes(encoder_config)
    if name in BAR_ATTRIBUTE_NAMES:
        raise _refuse(f"Attribute '{name}' is bar-level; /attr/set takes track-level attributes")
    if name not in known:
        raise (
            _unknown(name, known, "attribute")
            if known
            else _refuse(f"Unknown attribute: '{name}'; this checkpoint has no attributes")
        )
    if agent_is_drum is not None:
        allowed = DRUM_ATTRIBUTES if agent_is_drum else MELODIC_ATTRIBUTES
        if name not in allowed:
            kind, other = ("drum", "melodic") if agent_is_drum else ("melodic", "drum")
            usable = sorted(allowed & set(known))
            raise _refuse(
                f"Attribute '{name}' applies to {other} agents only; the agent track is {kind} "
                f"(its attributes: {', '.join(usable)})"
            )
    size = attribute_levels(encoder_config, name)
    if level >= size:
        raise _refuse(f"Attribute '{name}' level must be in 0..{size - 1}, got {level}")


def capabilities(encoder_config: EncoderConfig) -> dict[str, bool]:
    """The ``/midigpt/capabilities`` JSON object (§5.1 keys, in order) for this checkpoint."""
    known = set(known_attributes(encoder_config))
    result = {name: name in known for name in CAPABILITY_ATTRIBUTES}
    result["supports_token_mask"] = supports_token_mask(encoder_config)
    result["supports_attention_mask"] = True
    # The reference advertised attention_approx, but the engine refuses that mode (MASK_MODES),
    # so sideman reports it as unsupported rather than failing every job that asks for it.
    result["supports_attention_approx"] = False
    result["supports_attention_skip"] = True
    result["supports_remove"] = True
    return result
