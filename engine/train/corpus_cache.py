"""The parsed-corpus cache: one source's pieces as columnar arrays, written once, read every run.

Per source, ``<key>.npz`` holds every piece's columns concatenated, with offset arrays:

==================  ==========================================================================
array               contents
==================  ==========================================================================
note_track ...      the six NoteArrays columns (track int16, bar/onset/duration int32,
                    pitch/velocity uint8) of all pieces; ``note_offsets`` (n_pieces + 1,) int64
meters              (n_bars_total, 2) int16 time signatures; ``bar_offsets`` (n_pieces + 1,)
track_program       (n_tracks_total,) int16 GM program; ``track_is_drum`` bool;
                    ``track_offsets`` (n_pieces + 1,)
tempo               (n_pieces,) int64 microseconds per quarter
==================  ==========================================================================

and ``<key>.json`` the piece ids, track names, skipped files with their reasons and the
fingerprint the cache was made under; a different fingerprint means a stale cache. Both files are
written under a temporary name and renamed (the JSON last), so a reader never sees half a cache.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sideman.engine.score import NoteArrays, Score, TrackInfo

log = logging.getLogger(__name__)

_NOTE_DTYPES = {"track": np.int16, "bar": np.int32, "onset": np.int32, "duration": np.int32,
                "pitch": np.uint8, "velocity": np.uint8}  # fmt: skip


def write_cache(
    cache_dir: Path,
    key: str,
    fingerprint: dict[str, Any],
    found: Sequence[tuple[str, Score]],
    skipped: dict[str, str],
) -> None:
    """Store ``found`` (piece id, score at the model resolution) and the skip reasons under ``key``."""
    scores = [score for _, score in found]
    arrays: dict[str, np.ndarray] = {
        f"note_{name}": _concat([getattr(s.notes, name) for s in scores], dtype)
        for name, dtype in _NOTE_DTYPES.items()
    }
    arrays["note_offsets"] = _offsets([len(s.notes) for s in scores])
    arrays["meters"] = _concat([s.time_signatures for s in scores], np.int16).reshape(-1, 2)
    arrays["bar_offsets"] = _offsets([s.n_bars for s in scores])
    arrays["track_program"] = _concat([[t.program for t in s.track_info] for s in scores], np.int16)
    arrays["track_is_drum"] = _concat([[t.is_drum for t in s.track_info] for s in scores], np.bool_)
    arrays["track_offsets"] = _offsets([s.n_tracks for s in scores])
    arrays["tempo"] = np.asarray([s.tempo for s in scores], dtype=np.int64)
    index = {
        "fingerprint": fingerprint,
        "pieces": [{"id": pid, "tracks": [t.name for t in s.track_info]} for pid, s in found],
        "skipped": skipped,
    }
    npz, meta = cache_paths(cache_dir, key)
    partial = npz.with_name(f".{npz.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as file:
        np.savez_compressed(file, **arrays)
    os.replace(partial, npz)
    partial = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(index, indent=1))
    os.replace(partial, meta)


def read_cache(
    cache_dir: Path, key: str, fingerprint: dict[str, Any], resolution: int
) -> tuple[list[tuple[str, Score]], dict[str, str]] | None:
    """(pieces, skip reasons) stored under ``key``, or None when missing, stale or unreadable."""
    npz, meta = cache_paths(cache_dir, key)
    try:
        index = json.loads(meta.read_text())
        if index.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            log.info("%s: the cache was made from other files or settings; parsing again", key)
            return None
        with np.load(npz) as data:
            arrays = {name: data[name] for name in data.files}
        return _pieces(index, arrays, resolution), dict(index["skipped"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("%s: unreadable cache (%s); parsing again", key, exc)
        return None


def cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.npz", cache_dir / f"{key}.json"


def _pieces(
    index: dict[str, Any], arrays: dict[str, np.ndarray], resolution: int
) -> list[tuple[str, Score]]:
    found = []
    for i, entry in enumerate(index["pieces"]):
        n0, n1 = arrays["note_offsets"][i : i + 2]
        b0, b1 = arrays["bar_offsets"][i : i + 2]
        t0, t1 = arrays["track_offsets"][i : i + 2]
        notes = NoteArrays(*(arrays[f"note_{name}"][n0:n1] for name in _NOTE_DTYPES))
        programs, drums = arrays["track_program"][t0:t1], arrays["track_is_drum"][t0:t1]
        tracks = [
            TrackInfo(program=int(program), is_drum=bool(drum), name=name)
            for program, drum, name in zip(programs, drums, entry["tracks"], strict=True)
        ]
        score = Score(
            resolution=resolution,
            time_signatures=arrays["meters"][b0:b1],
            track_info=tracks,
            notes=notes,
            tempo=int(arrays["tempo"][i]),
        )
        found.append((entry["id"], score))
    return found


def _concat(parts: Sequence[Any], dtype: Any) -> np.ndarray:
    arrays = [np.asarray(p) for p in parts]
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype=dtype)


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
