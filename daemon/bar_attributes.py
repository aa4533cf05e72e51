"""Per-bar agent attributes: ``/midigpt/attr/set_bar`` (osc-protocol §16 D61).

A checkpoint can condition single bars only on attributes its vocabulary encodes per bar. Which
those are is read from the encoder config (its attributes, present in its vocabulary) and the
engine's list of bar-level attribute names; yellow has none, so every ``set_bar`` is refused there
with error 4 rather than accepted and failed at generation. Where they exist, the levels go to the
agent's ``TrackPrompt.bar_attributes`` for the job bars they name.
"""

from __future__ import annotations

from typing import Any

from sideman.daemon.params import attribute_levels, known_attributes
from sideman.daemon.protocol import ErrorCode, ProtocolError
from sideman.engine.request import BAR_ATTRIBUTE_NAMES
from sideman.engine.vocab import EncoderConfig

ADDRESS = "/midigpt/attr/set_bar"
MAX_BARS_AHEAD = 64  # bounds what a client can store: a level for a bar this far ahead at most


def bar_attribute_names(encoder_config: EncoderConfig) -> tuple[str, ...]:
    """The attributes this checkpoint can take per bar (none for yellow)."""
    return tuple(name for name in known_attributes(encoder_config) if name in BAR_ATTRIBUTE_NAMES)


class BarAttributes:
    """Levels per future bar for the agent: {bar_index: {name: level}}; owned by the loop."""

    def __init__(self, encoder_config: EncoderConfig, names: tuple[str, ...] | None = None) -> None:
        self.encoder_config = encoder_config
        self.names = bar_attribute_names(encoder_config) if names is None else tuple(names)
        self._levels: dict[int, dict[str, int]] = {}

    def set(self, bar_index: int, name: str, level: int, playhead: int) -> None:
        """Set (level >= 0) or remove (level < 0) one bar's attribute; ProtocolError 4 if refused."""
        if not self.names:
            raise ProtocolError(
                ErrorCode.INVALID_PARAM,
                f"{ADDRESS}: the {self.encoder_config.name} vocabulary has no bar-level attribute "
                f"tokens, so attributes cannot be set per bar with this checkpoint; "
                f"/midigpt/attr/set {name} <level> sets them for the whole agent track",
            )
        if name not in self.names:
            raise ProtocolError(
                ErrorCode.INVALID_PARAM,
                f"{ADDRESS}: unknown bar-level attribute '{name}'; this checkpoint's: "
                f"{', '.join(self.names)}",
            )
        self._forget_before(playhead)
        if level < 0:
            self._levels.get(bar_index, {}).pop(name, None)
            return
        if not playhead <= bar_index <= playhead + MAX_BARS_AHEAD:
            raise ProtocolError(
                ErrorCode.INVALID_PARAM,
                f"{ADDRESS}: bar {bar_index} must be a bar not played yet, "
                f"{playhead}..{playhead + MAX_BARS_AHEAD}",
            )
        size = attribute_levels(self.encoder_config, name)
        if level >= size:
            raise ProtocolError(
                ErrorCode.INVALID_PARAM,
                f"{ADDRESS}: attribute '{name}' level must be in 0..{size - 1}, got {level}",
            )
        self._levels.setdefault(bar_index, {})[name] = level

    def levels(self) -> dict[int, dict[str, int]]:
        """A copy of every bar's levels (what a job snapshot takes)."""
        return {bar: dict(values) for bar, values in self._levels.items() if values}

    def clear(self) -> None:
        self._levels.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "bars": {str(bar): values for bar, values in sorted(self.levels().items())},
        }

    def _forget_before(self, playhead: int) -> None:
        for bar in [b for b in self._levels if b < playhead]:
            del self._levels[bar]
