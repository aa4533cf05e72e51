"""Training pieces: multi-part sets from the corpus inside the music21 wheel, and MIDI folders.

``load_corpus`` turns each source into ``Piece``s whose scores sit on the yellow grid (12 ticks per
quarter) with every bar's meter in the vocabulary, parsing each source once (in worker processes,
with a progress bar) and caching it (``corpus_cache``). ``split_pieces`` splits by piece id.

Corpus sets (``SOURCES``) and their General MIDI programs, parts top to bottom:

* ``bach``: the four-part chorales (exactly 4 voices; the versions with 5 to 15 parts, which
  double the voices with instruments, are skipped), voiced as the monitor's demo plays them, so
  the model has seen its instruments: soprano flute (73), alto oboe (68), tenor clarinet (71),
  bass bassoon (70).
* ``quartets``: the string quartets of Beethoven, Haydn, Mozart (K. 80, 155, 156, 458) and
  Schumann (Op. 41 No. 1): violin (40), violin (40), viola (41), cello (42).
* ``palestrina``, ``monteverdi``, ``trecento``: sung polyphony: the upper half of the voices choir
  aahs (52), the lower half voice oohs (53), so high and low voices are different instruments.

Velocities come from a part's dynamics where it has them (p = 44, mf = 70, f = 89, ff = 108: music21's
volume scalars; accents such as sf apply to their own onset), otherwise the demo's balance: top
voice 88, bass 80, inner voices 76. How measures become bars is in ``music21_scores``. Of several
files with one name (``bwv277.mxl``, ``bwv277.krn``) the MusicXML one is read.

A MIDI folder is read recursively (``*.mid``, ``*.midi``) with ``read_midi``; a file with a meter
outside the vocabulary is skipped whole rather than cut, like an unreadable one.

Each skipped file is counted by reason in one warning per source (and kept in the cache's JSON).
The cache, per source, is ``<cache_dir>/<key>.npz`` + ``<key>.json`` (``corpus_cache``); ``key``
is the set's name or ``midi-<folder name>-<hash of its path>``, with ``-limit<N>`` under a limit.
Its fingerprint holds the cache format version, the music21 version or the folder's file list
(path, size, mtime) and the limit; any change parses the source again.

The split hashes each piece id with the seed (BLAKE2b) and sends the ids with the lowest hashes to
validation: deterministic, independent of input order, and a piece keeps its side while the seed
and the set of ids stay the same. (Chorale variants such as ``bwv112.5`` and ``bwv112.5-sc`` are
different ids and may fall on different sides.)

Licence: the music21 corpus encodings are for non-commercial / academic use (platform-notes.md
§8.2); a model trained on them inherits that restriction.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sideman.engine.midi_io import MidiFileError, TimeSignatureError, read_midi
from sideman.engine.score import Score, ScoreError
from sideman.engine.train.corpus_cache import cache_paths, read_cache, write_cache
from sideman.engine.train.music21_scores import RESOLUTION, SkipPiece, score_from_music21
from sideman.engine.vocab import EncoderConfig

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the conversion changes: every cache is then parsed again
MIDI_SUFFIXES = (".mid", ".midi")
# Preferred file of several with the same stem (bach/bwv277.mxl over bach/bwv277.krn).
_FORMAT_RANK = {".mxl": 0, ".musicxml": 1, ".xml": 2, ".krn": 3}


class CorpusError(ValueError):
    """A source that names neither a corpus set nor a folder, or a setting out of range."""


@dataclass(frozen=True)
class CorpusSource:
    """A set inside music21's corpus: file patterns under the corpus root, voicing, part counts."""

    description: str
    patterns: tuple[str, ...]
    voicing: str  # music21_scores.VOICINGS: "chorale", "strings" or "choir"
    min_parts: int = 2
    max_parts: int = 16


SOURCES: dict[str, CorpusSource] = {
    "bach": CorpusSource(
        "J. S. Bach, four-part chorales", ("bach/*.mxl", "bach/*.xml", "bach/*.krn"), "chorale", 4, 4
    ),
    "palestrina": CorpusSource("G. P. da Palestrina, mass movements (2-8 voices)", ("palestrina/*.krn",), "choir"),
    "quartets": CorpusSource(
        "String quartets: Beethoven, Haydn, Mozart, Schumann",
        (
            "beethoven/*.mxl", "beethoven/*/*.mxl", "haydn/*/*.mxl",
            "mozart/k80/*.mxl", "mozart/k155/*.mxl", "mozart/k156/*.mxl", "mozart/k458/*.mxl",
            "schumann_robert/opus41no1/*.mxl",
        ),
        "strings", 4, 4,
    ),
    "trecento": CorpusSource("Trecento polyphony (PMFC)", ("trecento/*.xml", "trecento/*.mxl"), "choir"),
    "monteverdi": CorpusSource("C. Monteverdi, madrigals", ("monteverdi/*.mxl",), "choir"),
}  # fmt: skip


@dataclass(frozen=True)
class Piece:
    """One training piece: ``score`` on the 12-tick grid, every meter in the vocabulary."""

    id: str
    source: str
    score: Score


# ---- parsing one file (runs in worker processes) ----------------------------------------------
@dataclass(frozen=True)
class _Job:
    kind: str  # "music21" or "midi"
    path: str
    piece_id: str
    voicing: str = ""
    min_parts: int = 0
    max_parts: int = 0


def _parse(job: _Job) -> tuple[str, Score | None, str]:
    """(piece id, score or None, skip reason) for one file; never raises for a bad file."""
    config = EncoderConfig.yellow()
    try:
        score = _parse_music21(job, config) if job.kind == "music21" else _parse_midi(job, config)
    except SkipPiece as skip:
        return job.piece_id, None, str(skip)
    if len(score.notes) == 0:
        return job.piece_id, None, "no notes"
    return job.piece_id, score, ""


def _parse_music21(job: _Job, config: EncoderConfig) -> Score:
    from music21 import converter, stream

    try:
        with warnings.catch_warnings():  # "measure 96 is overfull": handled by music21_scores
            warnings.simplefilter("ignore")
            work = converter.parse(job.path, forceSource=True)
    except Exception as exc:  # music21 raises many unrelated types on bad encodings
        raise SkipPiece(f"unreadable ({type(exc).__name__})") from None
    if not isinstance(work, stream.Score):
        raise SkipPiece(f"not a single score ({type(work).__name__})")
    voices = sum(1 for part in work.parts if part.recurse().notes.first() is not None)
    if not job.min_parts <= voices <= job.max_parts:
        wanted = (
            f"{job.min_parts}"
            if job.min_parts == job.max_parts
            else f"{job.min_parts}-{job.max_parts}"
        )
        raise SkipPiece(f"{voices} voices (wants {wanted})")
    try:
        return score_from_music21(work, job.voicing, config)
    except ScoreError as exc:
        raise SkipPiece(f"inconsistent score ({exc})") from None


def _parse_midi(job: _Job, config: EncoderConfig) -> Score:
    try:
        return read_midi(job.path, encoder_config=config)
    except TimeSignatureError:
        raise SkipPiece("meter outside the vocabulary") from None
    except MidiFileError as exc:
        raise SkipPiece(f"unreadable MIDI ({type(exc).__name__})") from None
    except ScoreError as exc:
        raise SkipPiece(f"inconsistent score ({exc})") from None


# ---- load_corpus -------------------------------------------------------------------------------
def load_corpus(
    sources: Sequence[str],
    cache_dir: Path,
    *,
    workers: int = 2,
    progress: bool = True,
    limit: int | None = None,
) -> list[Piece]:
    """Pieces of every source (a SOURCES name or a MIDI folder), parsed once and cached per source.

    ``limit`` caps the pieces taken from each source (files are tried in sorted order until that
    many parse). Skipped files are logged as one counted warning per source.
    """
    if workers < 1:
        raise CorpusError(f"workers must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise CorpusError(f"limit must be >= 1 or None, got {limit}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    pieces: list[Piece] = []
    for source in map(str, sources):
        jobs, fingerprint, key = _plan_source(source, limit)
        cached = read_cache(cache_dir, key, fingerprint, RESOLUTION)
        if cached is not None:
            found, skipped = cached
            log.info(
                "%s: %d pieces from the cache %s",
                source,
                len(found),
                cache_paths(cache_dir, key)[0],
            )
        else:
            try:
                found, skipped = _parse_all(source, jobs, workers, progress, limit)
            except BrokenProcessPool as exc:  # e.g. a __main__ that spawned workers cannot import
                log.warning(
                    "%s: worker processes failed (%s); parsing in this process", source, exc
                )
                found, skipped = _parse_all(source, jobs, 1, progress, limit)
            write_cache(cache_dir, key, fingerprint, found, skipped)
            if skipped:
                counts = Counter(skipped.values()).most_common()
                reasons = "; ".join(f"{why}: {n}" for why, n in counts)
                log.warning(
                    "%s: skipped %d of %d files (%s)",
                    source,
                    len(skipped),
                    len(found) + len(skipped),
                    reasons,
                )
        pieces.extend(Piece(piece_id, source, score) for piece_id, score in found)
    return pieces


def _plan_source(source: str, limit: int | None) -> tuple[list[_Job], dict[str, Any], str]:
    """The files to parse, the cache fingerprint and the cache file stem of one source."""
    if source in SOURCES:
        import music21

        spec = SOURCES[source]
        root = Path(music21.common.getCorpusFilePath())
        jobs = [
            _Job("music21", str(path), path.relative_to(root).with_suffix("").as_posix(),
                 spec.voicing, spec.min_parts, spec.max_parts)
            for path in _corpus_files(root, spec.patterns)
        ]  # fmt: skip
        fingerprint = {
            "music21": music21.__version__,
            "source": source,
            "patterns": list(spec.patterns),
        }
        key = source
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise CorpusError(
                f"source {source!r} is neither a corpus set ({', '.join(SOURCES)}) nor a folder of MIDI files"
            )
        folder = folder.resolve()
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file()
        )
        jobs = [
            _Job("midi", str(p), f"{folder.name}/{p.relative_to(folder).as_posix()}") for p in files
        ]
        listing = [
            [p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns]
            for p in files
        ]
        fingerprint = {"folder": str(folder), "files": listing}
        digest = hashlib.blake2b(str(folder).encode(), digest_size=6).hexdigest()
        key = f"midi-{_slug(folder.name)}-{digest}"
    fingerprint.update({"version": CACHE_VERSION, "resolution": RESOLUTION, "limit": limit})
    if limit is not None:
        key += f"-limit{limit}"
    return jobs, fingerprint, key


def _corpus_files(root: Path, patterns: Sequence[str]) -> list[Path]:
    """Files matching the patterns, one per stem (the preferred format), sorted."""
    best: dict[Path, Path] = {}
    for pattern in patterns:
        for path in root.glob(pattern):
            stem = path.with_suffix("")
            rank = _FORMAT_RANK.get(path.suffix.lower(), len(_FORMAT_RANK))
            current = best.get(stem)
            if current is None or rank < _FORMAT_RANK.get(
                current.suffix.lower(), len(_FORMAT_RANK)
            ):
                best[stem] = path
    return sorted(best.values())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "folder"


def _parse_all(
    source: str, jobs: list[_Job], workers: int, progress: bool, limit: int | None
) -> tuple[list[tuple[str, Score]], dict[str, str]]:
    found: list[tuple[str, Score]] = []
    skipped: dict[str, str] = {}
    bar = tqdm(
        total=limit if limit is not None else len(jobs),
        desc=f"parse {source}",
        unit="piece",
        disable=not progress,
    )
    with bar, _pool(workers, len(jobs)) as run:
        for batch in _batches(jobs, limit, workers, found):
            for piece_id, score, reason in run(batch):
                if score is None:
                    skipped[piece_id] = reason
                    if limit is None:
                        bar.update()
                elif limit is None or len(found) < limit:
                    found.append((piece_id, score))
                    bar.update()
    return found, skipped


def _batches(
    jobs: list[_Job], limit: int | None, workers: int, found: list
) -> Iterator[list[_Job]]:
    """All jobs at once; with a limit, just enough batches to reach it."""
    if limit is None:
        yield jobs
        return
    position = 0
    while position < len(jobs) and len(found) < limit:
        size = max(limit - len(found), workers)
        yield jobs[position : position + size]
        position += size


@contextlib.contextmanager
def _pool(
    workers: int, n_jobs: int
) -> Iterator[Callable[[list[_Job]], Iterable[tuple[str, Score | None, str]]]]:
    """``run(jobs)`` -> results in job order: a process pool when it helps, else in this process.

    Workers are spawned, not forked: the caller may hold torch's threads.
    """
    if workers <= 1 or n_jobs <= 1:
        yield lambda jobs: map(_parse, jobs)
        return
    workers = min(workers, n_jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as executor:
        yield lambda jobs: executor.map(
            _parse, jobs, chunksize=max(1, min(8, len(jobs) // (8 * workers)))
        )


# ---- split -------------------------------------------------------------------------------------
def split_pieces(
    pieces: Sequence[Piece], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Piece], list[Piece]]:
    """(train, validation) by piece id: the ``round(n_ids · val_fraction)`` ids (at least one when
    the fraction is positive, never all) with the lowest seeded BLAKE2b hashes go to validation.

    Deterministic for a seed and a set of ids, whatever order the pieces come in; both lists are
    sorted by (id, source).
    """
    if not 0 <= val_fraction < 1:
        raise CorpusError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted({piece.id for piece in pieces}, key=lambda pid: (_split_hash(pid, seed), pid))
    n_val = 0
    if val_fraction > 0 and len(ids) > 1:
        n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    held_out = set(ids[:n_val])
    ordered = sorted(pieces, key=lambda piece: (piece.id, piece.source))
    train = [piece for piece in ordered if piece.id not in held_out]
    validation = [piece for piece in ordered if piece.id in held_out]
    return train, validation


def _split_hash(piece_id: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\0{piece_id}".encode(), digest_size=8).digest()
