"""Encoder configuration and the token-id layout it fixes (MIDI-GPT "yellow" compatible).

The id layout is read from the config's ``token_domains`` list in file order and never rebuilt,
so a checkpoint's embedded encoder config is the single source of truth for its vocabulary.
Every table the numeric kernels need (id -> type/value, offsets, bar lengths, velocity and
instrument bins) is precomputed here as a numpy array.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from sideman.dsp import token_types as codes

N_TOKEN_TYPES = codes.N_TYPES  # size of per-type lookup arrays (codes stay under this)

# Token types, numbered as the reference's enum where it has them. The codes live in
# sideman.dsp.token_types so the kernels (which import nothing of engine) share one table.
TokenType = IntEnum(
    "TokenType",
    {name: value for name, value in vars(codes).items() if name.isupper() and name != "N_TYPES"},
)


# Names used in ``token_domains`` entries -> TokenType.
TOKEN_TYPE_NAMES: dict[str, TokenType] = {
    "PieceStart": TokenType.PIECE_START,
    "NoteOnset": TokenType.NOTE_ONSET,
    "TimeAbsolutePos": TokenType.TIME_ABSOLUTE_POS,
    "Instrument": TokenType.INSTRUMENT,
    "Bar": TokenType.BAR,
    "BarEnd": TokenType.BAR_END,
    "Track": TokenType.TRACK,
    "TrackEnd": TokenType.TRACK_END,
    "FillInPlaceholder": TokenType.FILL_IN_PLACEHOLDER,
    "FillInStart": TokenType.FILL_IN_START,
    "FillInEnd": TokenType.FILL_IN_END,
    "VelocityLevel": TokenType.VELOCITY_LEVEL,
    "NoteDensity": TokenType.NOTE_DENSITY,
    "TimeSig": TokenType.TIME_SIGNATURE,
    "NoteDuration": TokenType.NOTE_DURATION,
    "MinPolyphony": TokenType.MIN_POLYPHONY,
    "MaxPolyphony": TokenType.MAX_POLYPHONY,
    "MinNoteDuration": TokenType.MIN_NOTE_DURATION,
    "MaxNoteDuration": TokenType.MAX_NOTE_DURATION,
    "NumBars": TokenType.NUM_BARS,
    "PieceEnd": TokenType.PIECE_END,
    "None": TokenType.PIECE_END,
    "MaskBar": TokenType.MASK_BAR,
}
TOKEN_TYPE_LABELS: dict[TokenType, str] = {}
for _name, _type in TOKEN_TYPE_NAMES.items():
    TOKEN_TYPE_LABELS.setdefault(_type, _name)

# Track attributes in their fixed emission order (tokens.md §3.1 step 4.3), with their token type.
ATTRIBUTE_TYPES: dict[str, TokenType] = {
    "min_polyphony": TokenType.MIN_POLYPHONY,
    "max_polyphony": TokenType.MAX_POLYPHONY,
    "min_note_duration": TokenType.MIN_NOTE_DURATION,
    "max_note_duration": TokenType.MAX_NOTE_DURATION,
    "note_density": TokenType.NOTE_DENSITY,
}
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTE_TYPES)
MELODIC_ATTRIBUTES = frozenset(ATTRIBUTE_NAMES[:4])
DRUM_ATTRIBUTES = frozenset({"note_density"})
DENSITY_DRUM_ROW = "128"


class EncoderConfigError(ValueError):
    """An encoder configuration that cannot describe a usable vocabulary."""


class VocabularyError(ValueError):
    """A token type/value that the vocabulary cannot represent."""


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder JSON: grid, tables and the ordered ``token_domains`` id layout."""

    token_domains: tuple[tuple[str, int], ...]
    name: str = "yellow"
    resolution: int = 12
    decode_resolution: int = 1920
    pitch_min: int = 0
    pitch_max: int = 127
    note_duration_max_beats: int = 8
    velocity_levels: int = 32
    num_bars_map: tuple[int, ...] = (4, 8)
    supports_infill: bool = True
    supports_mask_bar_token: bool = False
    time_signatures: tuple[tuple[int, int], ...] = ()
    instrument_merge_groups: tuple[tuple[int, ...], ...] = ()
    attributes: tuple[str, ...] = ATTRIBUTE_NAMES
    density_quantiles: dict[str, tuple[int, ...]] = field(default_factory=dict)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        if not isinstance(data, dict):
            raise EncoderConfigError(f"encoder config must be a JSON object, got {type(data).__name__}")
        if "token_domains" not in data or not data["token_domains"]:
            raise EncoderConfigError(
                "encoder config has no 'token_domains' list; sideman reads the id layout from it "
                "verbatim and never rebuilds it"
            )
        domains = tuple(_parse_domain(entry, i) for i, entry in enumerate(data["token_domains"]))
        known = {f for f in cls.__dataclass_fields__}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        kwargs["token_domains"] = domains
        for key in ("num_bars_map", "attributes"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if "time_signatures" in kwargs:
            kwargs["time_signatures"] = tuple((int(n), int(d)) for n, d in kwargs["time_signatures"])
        if "instrument_merge_groups" in kwargs:
            kwargs["instrument_merge_groups"] = tuple(
                tuple(int(p) for p in g) for g in kwargs["instrument_merge_groups"]
            )
        if "density_quantiles" in kwargs:
            kwargs["density_quantiles"] = {
                str(k): tuple(int(x) for x in v) for k, v in kwargs["density_quantiles"].items()
            }
        config = cls(**kwargs)
        _ = config.vocabulary  # validate eagerly: a bad layout fails at load, not mid-generation
        return config

    @classmethod
    def from_json(cls, source: str | Path | bytes) -> EncoderConfig:
        """Read a config from a JSON file path or a JSON text."""
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
            path = Path(source)
            try:
                text = path.read_text()
            except OSError as exc:
                raise EncoderConfigError(f"cannot read encoder config {path}: {exc}") from exc
        else:
            text = source.decode() if isinstance(source, bytes) else source
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EncoderConfigError(f"encoder config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def yellow(cls) -> EncoderConfig:
        """The yellow encoder config shipped as package data."""
        return _yellow()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resolution": self.resolution,
            "decode_resolution": self.decode_resolution,
            "pitch_min": self.pitch_min,
            "pitch_max": self.pitch_max,
            "note_duration_max_beats": self.note_duration_max_beats,
            "velocity_levels": self.velocity_levels,
            "num_bars_map": list(self.num_bars_map),
            "supports_infill": self.supports_infill,
            "supports_mask_bar_token": self.supports_mask_bar_token,
            "time_signatures": [list(ts) for ts in self.time_signatures],
            "instrument_merge_groups": [list(g) for g in self.instrument_merge_groups],
            "attributes": list(self.attributes),
            "density_quantiles": {k: list(v) for k, v in self.density_quantiles.items()},
            "token_domains": [[name, size] for name, size in self.token_domains],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    # ---- derived tables ----------------------------------------------------------------
    @cached_property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary(self.token_domains)

    def time_signature_index(self, numerator: int, denominator: int) -> int:
        """Index of a meter in the time-signature list, or -1 when it is not in the vocabulary."""
        return self._ts_lookup.get((int(numerator), int(denominator)), -1)

    @cached_property
    def _ts_lookup(self) -> dict[tuple[int, int], int]:
        return {ts: i for i, ts in enumerate(self.time_signatures)}

    @cached_property
    def time_signature_array(self) -> np.ndarray:
        """(n_meters, 2) int32 numerator, denominator by TimeSig value."""
        return np.asarray(self.time_signatures, dtype=np.int32).reshape(-1, 2)

    @cached_property
    def bar_ticks(self) -> np.ndarray:
        """Exact bar length in model ticks by TimeSig value: resolution·4·n/d (48·n/d at 12 tpq)."""
        ts = self.time_signature_array
        ticks = self.resolution * 4 * ts[:, 0] / ts[:, 1]
        if not np.all(ticks == np.round(ticks)):
            bad = [self.time_signatures[i] for i in np.flatnonzero(ticks != np.round(ticks))]
            raise EncoderConfigError(f"meters {bad} are not a whole number of ticks at resolution {self.resolution}")
        return ticks.astype(np.int32)

    @cached_property
    def program_to_group(self) -> np.ndarray:
        """(128,) int32 GM program -> dense instrument-group id (identity without merge groups)."""
        representative = np.arange(128, dtype=np.int32)
        for group in self.instrument_merge_groups:
            for program in group:
                representative[program] = group[0]
        reps = np.unique(representative)
        dense = np.searchsorted(reps, representative).astype(np.int32)
        return dense

    @cached_property
    def group_to_program(self) -> np.ndarray:
        """(n_groups,) int32 dense group id -> its representative (first) program."""
        groups = self.program_to_group
        out = np.zeros(int(groups.max()) + 1, dtype=np.int32)
        for program in range(127, -1, -1):
            out[groups[program]] = program
        return out

    @cached_property
    def velocity_to_level(self) -> np.ndarray:
        """(128,) int32 MIDI velocity -> VelocityLevel bin (tokens.md §6.4)."""
        levels = self.velocity_levels
        v = np.arange(128, dtype=np.int64)
        out = np.minimum(1 + (v * (levels - 1)) // 128, levels - 1)
        out[0] = 0
        out[127] = levels - 1
        return out.astype(np.int32)

    @cached_property
    def level_to_velocity(self) -> np.ndarray:
        """(levels,) int32 bin -> the second MIDI velocity in the bin; bin 0 decodes as 100."""
        table = self.velocity_to_level
        out = np.full(self.velocity_levels, 100, dtype=np.int32)
        for level in range(1, self.velocity_levels):
            members = np.flatnonzero(table == level)
            if len(members):
                out[level] = members[min(1, len(members) - 1)]
        return out

    @cached_property
    def density_thresholds(self) -> np.ndarray:
        """(129, 10) int64 NoteDensity thresholds by row (GM program 0..127, 128 = drums); -1 rows absent."""
        out = np.full((129, 10), -1, dtype=np.int64)
        for key, row in self.density_quantiles.items():
            out[int(key), : len(row)] = row
        return out

    @property
    def max_duration_ticks(self) -> int:
        return self.note_duration_max_beats * self.resolution


def _parse_domain(entry: Any, index: int) -> tuple[str, int]:
    if isinstance(entry, dict):
        name, size = entry.get("type"), entry.get("size")
    elif isinstance(entry, (list, tuple)) and len(entry) == 2:
        name, size = entry
    else:
        raise EncoderConfigError(f"token_domains[{index}] must be [type, size], got {entry!r}")
    if isinstance(name, int) and not isinstance(name, bool):
        try:
            name = TOKEN_TYPE_LABELS[TokenType(name)]
        except ValueError:
            raise EncoderConfigError(f"token_domains[{index}]: unknown token type id {name}") from None
    if name not in TOKEN_TYPE_NAMES:
        raise EncoderConfigError(f"token_domains[{index}]: unsupported token type {name!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise EncoderConfigError(f"token_domains[{index}] ({name}): size must be a positive int, got {size!r}")
    return str(name), int(size)


class Vocabulary:
    """The id layout: each token type owns ``[offset, offset + size)`` in ``token_domains`` order."""

    def __init__(self, token_domains: tuple[tuple[str, int], ...]):
        self.domains: tuple[tuple[TokenType, int], ...] = tuple(
            (TOKEN_TYPE_NAMES[name], size) for name, size in token_domains
        )
        self.offsets = np.full(N_TOKEN_TYPES, -1, dtype=np.int32)
        self.sizes = np.zeros(N_TOKEN_TYPES, dtype=np.int32)
        start = 0
        for token_type, size in self.domains:
            if self.offsets[token_type] >= 0:
                raise EncoderConfigError(f"token type {TOKEN_TYPE_LABELS[token_type]} appears twice in token_domains")
            self.offsets[token_type] = start
            self.sizes[token_type] = size
            start += size
        self.size = start
        self.id_type = np.empty(start, dtype=np.int32)
        self.id_value = np.empty(start, dtype=np.int32)
        for token_type, size in self.domains:
            first = self.offsets[token_type]
            self.id_type[first : first + size] = int(token_type)
            self.id_value[first : first + size] = np.arange(size, dtype=np.int32)

    def __len__(self) -> int:
        return self.size

    def has(self, token_type: TokenType) -> bool:
        return bool(self.offsets[token_type] >= 0)

    def encode(self, token_type: TokenType, value: int = 0) -> int:
        """Token id of (type, value); raises VocabularyError when out of the type's domain."""
        offset = int(self.offsets[token_type])
        if offset < 0:
            raise VocabularyError(f"vocabulary has no {TOKEN_TYPE_LABELS[TokenType(token_type)]} tokens")
        if not 0 <= value < self.sizes[token_type]:
            raise VocabularyError(
                f"{TOKEN_TYPE_LABELS[TokenType(token_type)]} value {value} outside [0, {self.sizes[token_type]})"
            )
        return offset + int(value)

    def decode(self, token_id: int) -> tuple[TokenType, int]:
        if not 0 <= token_id < self.size:
            raise VocabularyError(f"token id {token_id} outside the vocabulary [0, {self.size})")
        return TokenType(int(self.id_type[token_id])), int(self.id_value[token_id])

    def describe(self, token_id: int) -> str:
        token_type, value = self.decode(token_id)
        return f"{TOKEN_TYPE_LABELS[token_type]}({value})"


@lru_cache(maxsize=1)
def _yellow() -> EncoderConfig:
    text = resources.files("sideman.engine").joinpath("data/yellow_encoder.json").read_text()
    return EncoderConfig.from_json(text)
