"""Generation requests: per-track prompts plus an inference config, validated at the edge.

The JSON shape is MIDI-GPT's HTTP request (spec/http-api.md)::

    {"tracks": [{"id": 0, "bars": [4, 5], "autoregressive": true}], "config": {"model_dim": 8}}

Checks happen in two places. Building a ``TrackPrompt``/``InferenceConfig``/``GenerationRequest``
(directly or through ``from_dict``) checks types and everything that needs no score or vocabulary,
so an invalid object never exists. ``GenerationRequest.validate(score, encoder_config)`` adds what
depends on them: track and bar ranges, ``model_dim`` against ``num_bars_map``, attribute names, track
types and value ranges, meters, and the ``token`` mask mode. Every failure is a ``RequestError``
whose ``field`` is the offending path, e.g. ``tracks[1].bars[3]`` or ``config.top_p``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from sideman.engine.score import Score
from sideman.engine.vocab import (
    ATTRIBUTE_TYPES,
    DRUM_ATTRIBUTES,
    MELODIC_ATTRIBUTES,
    EncoderConfig,
    TokenType,
)

MASK_MODES = ("attention", "attention_skip", "remove", "token")
DEVICES = ("auto", "cpu", "cuda", "mps")
CONTROL_NAMES = ("time_signature",)
# Attributes that may be requested per bar. Yellow's five attributes are all track-level
# (tokens.md §7.3: bar-level attributes go only in per-bar requests, and yellow has none).
BAR_ATTRIBUTE_NAMES: frozenset[str] = frozenset()
MAX_CANDIDATES = 16
MAX_TEMPERATURE_ESCALATION = 3.0


class RequestError(ValueError):
    """A request that cannot be run; ``field`` is the path of the offending value."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def within(self, prefix: str) -> RequestError:
        """The same error with its field path nested under ``prefix`` (e.g. ``tracks[2]``)."""
        return RequestError(f"{prefix}.{self.field}" if self.field else prefix, self.message)


class FrozenMap(Mapping):
    """A read-only, hashable, picklable mapping (``MappingProxyType`` cannot be pickled)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping | None = None):
        object.__setattr__(self, "_items", dict(items or {}))

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMap is read-only")

    def __reduce__(self) -> tuple:
        return (FrozenMap, (self._items,))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


# ---- value coercion: exact types, named fields -------------------------------------------------


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise RequestError(name, f"expected an int, got {_describe(value)}")
    return int(value)


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise RequestError(name, f"expected a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise RequestError(name, f"must be a finite number, got {number}")
    return number


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise RequestError(name, f"expected true or false, got {_describe(value)}")
    return bool(value)


def _choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise RequestError(name, f"expected a string, got {_describe(value)}")
    if value not in allowed:
        raise RequestError(name, f"must be one of {list(allowed)}, got {value!r}")
    return value


def _bar_list(value: Any, name: str) -> tuple[int, ...]:
    """A sequence of distinct bar indices ≥ 0 (upper bound is checked against the score)."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence | np.ndarray):
        raise RequestError(name, f"expected a list of bar indices, got {_describe(value)}")
    bars: list[int] = []
    seen: set[int] = set()
    for position, item in enumerate(value):
        bar = _int(item, f"{name}[{position}]")
        if bar < 0:
            raise RequestError(f"{name}[{position}]", f"bar index must be >= 0, got {bar}")
        if bar in seen:
            raise RequestError(f"{name}[{position}]", f"bar {bar} is listed twice")
        seen.add(bar)
        bars.append(bar)
    return tuple(bars)


def _mapping(value: Any, name: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise RequestError(name, f"expected an object, got {_describe(value)}")
    return value


def _attribute_values(value: Any, name: str) -> FrozenMap:
    """{attribute name: level}; names and level ranges are checked against the vocabulary later."""
    out: dict[str, int] = {}
    for key, level in _mapping(value, name).items():
        if not isinstance(key, str):
            raise RequestError(name, f"attribute names must be strings, got {_describe(key)}")
        level = _int(level, f"{name}.{key}")
        if level < 0:
            raise RequestError(f"{name}.{key}", f"level must be >= 0, got {level}")
        out[key] = level
    return FrozenMap(out)


def _control_values(value: Any, name: str) -> FrozenMap:
    """{control name: value}; only ``time_signature`` ([numerator, denominator]) is known."""
    out: dict[str, Any] = {}
    for key, control in _mapping(value, name).items():
        if key not in CONTROL_NAMES:
            raise RequestError(
                f"{name}.{key}", f"unknown control; known controls: {list(CONTROL_NAMES)}"
            )
        out[key] = _time_signature(control, f"{name}.{key}")
    return FrozenMap(out)


def _time_signature(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise RequestError(name, f"expected [numerator, denominator], got {_describe(value)}")
    numerator, denominator = _int(value[0], f"{name}[0]"), _int(value[1], f"{name}[1]")
    if numerator < 1 or denominator < 1:
        raise RequestError(
            name, f"numerator and denominator must be >= 1, got [{numerator}, {denominator}]"
        )
    return numerator, denominator


def _bar_keyed(value: Any, name: str, bars: tuple[int, ...], parse: Any) -> FrozenMap:
    """{bar: per-bar mapping}; keys may be ints or decimal strings (JSON object keys)."""
    out: dict[int, FrozenMap] = {}
    for key, per_bar in _mapping(value, name).items():
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            bar = int(key)
        elif isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_):
            bar = int(key)
        else:
            raise RequestError(name, f"keys must be bar indices, got {_describe(key)}")
        if bar not in bars:
            raise RequestError(
                f"{name}[{bar}]",
                f"bar {bar} is not one of this track's bars to generate {list(bars)}",
            )
        if bar in out:
            raise RequestError(f"{name}[{bar}]", f"bar {bar} is given twice")
        out[bar] = parse(per_bar, f"{name}[{bar}]")
    return FrozenMap(out)


def _check_fields(data: Any, cls: type, required: Sequence[str] = ()) -> Mapping:
    """A JSON object whose keys are all fields of ``cls``; unknown keys are named with a hint."""
    if not isinstance(data, Mapping):
        raise RequestError("", f"expected an object, got {_describe(data)}")
    known = [f.name for f in fields(cls)]
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else f"; known fields: {known}"
            raise RequestError(str(key), f"unknown field{suggestion}")
    for key in required:
        if key not in data:
            raise RequestError(key, "missing required field")
    return data


def _set(instance: Any, name: str, value: Any) -> None:
    object.__setattr__(instance, name, value)


# ---- the request types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackPrompt:
    """What to do with one score track.

    ``bars`` are the bars to generate (infill, or the suffix of an autoregressive track);
    ``ignore`` drops the track from the prompt entirely; ``mask_bars`` are bars the model must not
    see (e.g. future bars of a live human part). ``attributes`` overrides the track attributes;
    ``bar_attributes``/``bar_controls`` are keyed by bars of ``bars``.
    """

    id: int
    bars: tuple[int, ...] = ()
    autoregressive: bool = False
    ignore: bool = False
    mask_bars: tuple[int, ...] = ()
    attributes: Mapping[str, int] = field(default_factory=FrozenMap)
    controls: Mapping[str, Any] = field(default_factory=FrozenMap)
    bar_attributes: Mapping[int, Mapping[str, int]] = field(default_factory=FrozenMap)
    bar_controls: Mapping[int, Mapping[str, Any]] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        track_id = _int(self.id, "id")
        if track_id < 0:
            raise RequestError("id", f"track id must be >= 0, got {track_id}")
        _set(self, "id", track_id)
        bars = _bar_list(self.bars, "bars")
        _set(self, "bars", bars)
        _set(self, "autoregressive", _bool(self.autoregressive, "autoregressive"))
        _set(self, "ignore", _bool(self.ignore, "ignore"))
        if self.ignore and bars:
            raise RequestError(
                "ignore",
                f"an ignored track is dropped from the prompt and cannot have bars to generate {list(bars)}",
            )
        mask_bars = _bar_list(self.mask_bars, "mask_bars")
        for position, bar in enumerate(mask_bars):
            if bar in bars:
                raise RequestError(f"mask_bars[{position}]", f"bar {bar} is also a bar to generate")
        _set(self, "mask_bars", mask_bars)
        _set(self, "attributes", _attribute_values(self.attributes, "attributes"))
        _set(self, "controls", _control_values(self.controls, "controls"))
        _set(
            self,
            "bar_attributes",
            _bar_keyed(self.bar_attributes, "bar_attributes", bars, _attribute_values),
        )
        _set(
            self,
            "bar_controls",
            _bar_keyed(self.bar_controls, "bar_controls", bars, _control_values),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrackPrompt:
        return cls(**_check_fields(data, cls, required=("id",)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bars": list(self.bars),
            "autoregressive": self.autoregressive,
            "ignore": self.ignore,
            "mask_bars": list(self.mask_bars),
            "attributes": dict(self.attributes),
            "controls": _controls_to_dict(self.controls),
            "bar_attributes": {
                str(bar): dict(values) for bar, values in self.bar_attributes.items()
            },
            "bar_controls": {
                str(bar): _controls_to_dict(values) for bar, values in self.bar_controls.items()
            },
        }


def _controls_to_dict(controls: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in controls.items()
    }


@dataclass(frozen=True)
class InferenceConfig:
    """Sampling and planning parameters (defaults and ranges: osc-protocol.md §12.2, tokens.md §10).

    ``temperature_escalation`` above 3 is clamped to 3 rather than refused, as in the reference.
    ``max_new_tokens`` 0 means "up to the model's n_positions". ``seed`` < 0 leaves the job's
    generator unseeded; ``seed + attempt`` seeds attempt ``attempt`` otherwise.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    mask_k: int = 0
    mask_p: float = 0.0
    model_dim: int = 4
    bars_per_step: int = 1
    tracks_per_step: int = 1
    mask_mode: str = "attention"
    polyphony_hard_limit: int = 0
    density_hard_limit: int = 0
    seed: int = -1
    num_candidates: int = 1
    max_attempts: int = 3
    temperature_escalation: float = 1.0
    novelty_check: bool = True
    silence_check: bool = True
    max_new_tokens: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        self._coerce_types()
        self._check_sampling()
        self._check_planning()
        self._check_retries()

    def _coerce_types(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.type in ("float", float):
                _set(self, spec.name, _float(value, spec.name))
            elif spec.type in ("int", int):
                _set(self, spec.name, _int(value, spec.name))
            elif spec.type in ("bool", bool):
                _set(self, spec.name, _bool(value, spec.name))
        _set(self, "mask_mode", _choice(self.mask_mode, "mask_mode", MASK_MODES))
        _set(self, "device", _choice(self.device, "device", DEVICES))

    def _check_sampling(self) -> None:
        if self.temperature <= 0:
            raise RequestError("temperature", f"must be > 0, got {self.temperature}")
        for name in (
            "top_k",
            "mask_k",
            "polyphony_hard_limit",
            "density_hard_limit",
            "max_new_tokens",
        ):
            if getattr(self, name) < 0:
                raise RequestError(name, f"must be >= 0 (0 = off), got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise RequestError("top_p", f"must be in (0, 1], got {self.top_p}")
        if not 0 <= self.mask_p < 1:
            raise RequestError("mask_p", f"must be in [0, 1), got {self.mask_p}")
        if self.top_p < 1 and self.mask_p >= self.top_p:
            raise RequestError(
                "mask_p", f"must be < top_p ({self.top_p}) when top_p < 1, got {self.mask_p}"
            )
        if self.top_k > 0 and self.mask_k > 0 and self.mask_k >= self.top_k:
            raise RequestError(
                "mask_k", f"must be < top_k ({self.top_k}) when both are on, got {self.mask_k}"
            )

    def _check_planning(self) -> None:
        if self.model_dim < 1:
            raise RequestError("model_dim", f"must be >= 1, got {self.model_dim}")
        if not 1 <= self.bars_per_step <= self.model_dim:
            raise RequestError(
                "bars_per_step",
                f"must be in [1, model_dim={self.model_dim}], got {self.bars_per_step}",
            )
        if self.tracks_per_step < 1:
            raise RequestError("tracks_per_step", f"must be >= 1, got {self.tracks_per_step}")

    def _check_retries(self) -> None:
        if not 1 <= self.num_candidates <= MAX_CANDIDATES:
            raise RequestError(
                "num_candidates", f"must be in [1, {MAX_CANDIDATES}], got {self.num_candidates}"
            )
        if self.max_attempts < 1:
            raise RequestError("max_attempts", f"must be >= 1, got {self.max_attempts}")
        if self.temperature_escalation < 1:
            raise RequestError(
                "temperature_escalation", f"must be >= 1, got {self.temperature_escalation}"
            )
        _set(
            self,
            "temperature_escalation",
            min(self.temperature_escalation, MAX_TEMPERATURE_ESCALATION),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceConfig:
        return cls(**_check_fields(data, cls))

    def to_dict(self) -> dict[str, Any]:
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}


@dataclass(frozen=True)
class GenerationRequest:
    """Per-track prompts (at most one per score track) and one inference config."""

    tracks: tuple[TrackPrompt, ...]
    config: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        if isinstance(self.tracks, str | bytes | Mapping) or not isinstance(self.tracks, Sequence):
            raise RequestError(
                "tracks", f"expected a list of track prompts, got {_describe(self.tracks)}"
            )
        tracks = tuple(self.tracks)
        first_index: dict[int, int] = {}
        for index, track in enumerate(tracks):
            if not isinstance(track, TrackPrompt):
                raise RequestError(
                    f"tracks[{index}]", f"expected a TrackPrompt, got {_describe(track)}"
                )
            if track.id in first_index:
                raise RequestError(
                    f"tracks[{index}].id",
                    f"track {track.id} already has a prompt (tracks[{first_index[track.id]}])",
                )
            first_index[track.id] = index
        if not any(track.bars for track in tracks):
            raise RequestError("tracks", "no track has bars to generate")
        _set(self, "tracks", tracks)
        if not isinstance(self.config, InferenceConfig):
            raise RequestError(
                "config", f"expected an InferenceConfig, got {_describe(self.config)}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Parse the JSON request shape of spec/http-api.md (lists for tuples, string bar keys)."""
        data = _check_fields(data, cls, required=("tracks",))
        raw_tracks = data["tracks"]
        if isinstance(raw_tracks, str | bytes | Mapping) or not isinstance(raw_tracks, Sequence):
            raise RequestError(
                "tracks", f"expected a list of track prompts, got {_describe(raw_tracks)}"
            )
        tracks = []
        for index, raw in enumerate(raw_tracks):
            try:
                tracks.append(TrackPrompt.from_dict(raw))
            except RequestError as error:
                raise error.within(f"tracks[{index}]") from None
        try:
            config = InferenceConfig.from_dict(data.get("config", {}))
        except RequestError as error:
            raise error.within("config") from None
        return cls(tuple(tracks), config)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracks": [track.to_dict() for track in self.tracks],
            "config": self.config.to_dict(),
        }

    def check_bounds(self, score: Score) -> None:
        """The checks that need only the score's shape: track ids and bar indices in range."""
        for index, track in enumerate(self.tracks):
            where = f"tracks[{index}]"
            if track.id >= score.n_tracks:
                raise RequestError(
                    f"{where}.id", f"track {track.id} outside the score's {score.n_tracks} tracks"
                )
            for name in ("bars", "mask_bars"):
                for position, bar in enumerate(getattr(track, name)):
                    if bar >= score.n_bars:
                        raise RequestError(
                            f"{where}.{name}[{position}]",
                            f"bar {bar} outside the score's {score.n_bars} bars",
                        )

    def validate(self, score: Score, encoder_config: EncoderConfig) -> None:
        """Everything checkable before generation; raises the first RequestError found."""
        config = self.config
        if config.model_dim not in encoder_config.num_bars_map:
            raise RequestError(
                "config.model_dim",
                f"{config.model_dim} is not one of the checkpoint's window sizes {list(encoder_config.num_bars_map)}",
            )
        if score.n_bars < config.model_dim:
            raise RequestError(
                "config.model_dim",
                f"the score has {score.n_bars} bars, fewer than model_dim {config.model_dim}; "
                "extend the score or use a smaller model_dim",
            )
        if config.mask_mode == "token" and not encoder_config.vocabulary.has(TokenType.MASK_BAR):
            raise RequestError(
                "config.mask_mode",
                f"'token' needs a MaskBar token, which the {encoder_config.name} vocabulary lacks; "
                "use 'attention' (or 'attention_skip' / 'remove')",
            )
        self.check_bounds(score)
        for index, track in enumerate(self.tracks):
            is_drum = bool(score.track_info[track.id].is_drum)
            where = f"tracks[{index}]"
            _check_attributes(
                track.attributes, f"{where}.attributes", track.id, is_drum, encoder_config
            )
            for bar, values in track.bar_attributes.items():
                _check_bar_attributes(values, f"{where}.bar_attributes[{bar}]", encoder_config)
            _check_controls(track.controls, f"{where}.controls", encoder_config)
            for bar, values in track.bar_controls.items():
                _check_controls(values, f"{where}.bar_controls[{bar}]", encoder_config)


# ---- vocabulary-dependent checks ----------------------------------------------------------------


def _known_attributes(encoder_config: EncoderConfig) -> list[str]:
    vocabulary = encoder_config.vocabulary
    return [
        name
        for name in encoder_config.attributes
        if name in ATTRIBUTE_TYPES and vocabulary.has(ATTRIBUTE_TYPES[name])
    ]


def _check_attributes(
    values: Mapping[str, int],
    where: str,
    track_id: int,
    is_drum: bool,
    encoder_config: EncoderConfig,
) -> None:
    known = _known_attributes(encoder_config)
    for name, level in values.items():
        if name not in known:
            raise RequestError(
                f"{where}.{name}", f"unknown attribute; this checkpoint's attributes: {known}"
            )
        allowed = DRUM_ATTRIBUTES if is_drum else MELODIC_ATTRIBUTES
        if name not in allowed:
            kind, other = ("drum", "melodic") if is_drum else ("melodic", "drum")
            raise RequestError(
                f"{where}.{name}",
                f"applies to {other} tracks only; track {track_id} is a {kind} track "
                f"(its attributes: {sorted(allowed & set(known))})",
            )
        size = int(encoder_config.vocabulary.sizes[ATTRIBUTE_TYPES[name]])
        if level >= size:
            raise RequestError(f"{where}.{name}", f"level must be in 0..{size - 1}, got {level}")


def _check_bar_attributes(
    values: Mapping[str, int], where: str, encoder_config: EncoderConfig
) -> None:
    known = _known_attributes(encoder_config)
    for name in values:
        if name in BAR_ATTRIBUTE_NAMES:
            continue
        if name in known:
            raise RequestError(
                f"{where}.{name}",
                "is a track-level attribute; request it in the track's attributes "
                f"(the {encoder_config.name} vocabulary has no bar-level attributes)",
            )
        raise RequestError(
            f"{where}.{name}", f"unknown attribute; this checkpoint's attributes: {known}"
        )


def _check_controls(values: Mapping[str, Any], where: str, encoder_config: EncoderConfig) -> None:
    meter = values.get("time_signature")
    if meter is not None and encoder_config.time_signature_index(*meter) < 0:
        raise RequestError(
            f"{where}.time_signature",
            f"{meter[0]}/{meter[1]} is not in the {encoder_config.name} vocabulary's time signatures",
        )
