"""Append-only on-disk journal of bars that left the rolling score's memory.

Two files of little-endian int32 rows: notes (track serial, bar, onset, duration, pitch, velocity)
and meters (bar, numerator, denominator), one meter row per bar in increasing bar order, so the
k-th meter row belongs to the k-th journaled bar and can be read in O(1).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

_ROW = np.dtype("<i4")
NOTE_FIELDS = 6
METER_FIELDS = 3


class Journal:
    """Notes and meters of evicted bars; nothing of it stays in memory but two counters."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.notes_path = self._new_file("notes")
        self.meters_path = self._new_file("meters")
        self._notes_file: BinaryIO | None = open(self.notes_path, "ab")  # noqa: SIM115 - held open
        self._meters_file: BinaryIO | None = open(self.meters_path, "ab")  # noqa: SIM115
        self.bars = 0
        self.notes = 0

    def _new_file(self, kind: str) -> Path:
        handle, name = tempfile.mkstemp(
            prefix=f"journal-{kind}-", suffix=".i32", dir=self.directory
        )
        os.close(handle)
        return Path(name)

    def append(self, meter: tuple[int, int], rows: np.ndarray) -> None:
        """Journal one bar: its meter and its (n, 6) note rows (every row's bar is that bar)."""
        if self._notes_file is None or self._meters_file is None:
            raise RuntimeError("the journal is closed")
        bar = int(rows[0, 1]) if len(rows) else -1
        self._notes_file.write(np.ascontiguousarray(rows, dtype=_ROW).tobytes())
        self._meters_file.write(np.array([bar, meter[0], meter[1]], dtype=_ROW).tobytes())
        self.bars += 1
        self.notes += len(rows)

    def meter(self, index: int) -> tuple[int, int]:
        """Meter of the ``index``-th journaled bar."""
        if not 0 <= index < self.bars:
            raise IndexError(f"journal holds {self.bars} bars, asked for bar {index}")
        self._flush()
        with open(self.meters_path, "rb") as file:
            file.seek(index * METER_FIELDS * _ROW.itemsize)
            row = np.frombuffer(file.read(METER_FIELDS * _ROW.itemsize), dtype=_ROW)
        return int(row[1]), int(row[2])

    def meters(self) -> np.ndarray:
        """(bars, 2) int32 numerator, denominator of every journaled bar."""
        self._flush()
        return (
            np.fromfile(self.meters_path, dtype=_ROW)
            .reshape(-1, METER_FIELDS)[:, 1:]
            .astype(np.int32)
        )

    def rows(self) -> np.ndarray:
        """(notes, 6) int32 rows of every journaled note."""
        self._flush()
        return np.fromfile(self.notes_path, dtype=_ROW).reshape(-1, NOTE_FIELDS).astype(np.int32)

    def rows_for(self, serials: list[int], *, first_bar: int) -> np.ndarray:
        """Rows of the tracks with these serials: track = position in ``serials``, bar counted
        from ``first_bar``; rows of other (removed) tracks are left out."""
        rows = self.rows()
        live = np.asarray(serials, dtype=np.int64)
        rows = rows[np.isin(rows[:, 0], live)]
        position = np.zeros(int(live.max(initial=-1)) + 1, dtype=np.int32)
        position[live] = np.arange(len(live), dtype=np.int32)
        rows[:, 0] = position[rows[:, 0]]
        rows[:, 1] -= first_bar
        return rows

    def _flush(self) -> None:
        for file in (self._notes_file, self._meters_file):
            if file is not None:
                file.flush()

    def close(self) -> None:
        for file in (self._notes_file, self._meters_file):
            if file is not None:
                file.close()
        self._notes_file = self._meters_file = None

    def remove(self) -> None:
        self.close()
        self.notes_path.unlink(missing_ok=True)
        self.meters_path.unlink(missing_ok=True)
