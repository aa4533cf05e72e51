"""Training corpora: music21 sets and MIDI folders parsed once into a cache, and the piece split."""

from __future__ import annotations

import logging
import socket

import mido
import numpy as np
import pytest

from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.train import corpus
from sideman.engine.train.corpus import SOURCES, CorpusError, Piece, load_corpus, split_pieces
from sideman.engine.train.music21_scores import (
    CHORALE_PROGRAMS,
    music21_parts,
    score_from_music21,
    voice_programs,
)
from sideman.engine.vocab import EncoderConfig

YELLOW = EncoderConfig.yellow()


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


def forbid_parsing(monkeypatch) -> None:
    def parse(job):
        raise AssertionError(f"{job.path} was parsed again instead of read from the cache")

    monkeypatch.setattr(corpus, "_parse", parse)


def same_scores(a: Score, b: Score) -> bool:
    return (
        np.array_equal(a.notes.as_table(), b.notes.as_table())
        and np.array_equal(a.time_signatures, b.time_signatures)
        and [(t.program, t.is_drum, t.name) for t in a.track_info]
        == [(t.program, t.is_drum, t.name) for t in b.track_info]
    )


# ---- music21 sets --------------------------------------------------------------------------------
def test_bach_chorales_load_offline_and_the_second_load_reads_the_cache(
    tmp_path, offline, monkeypatch
):
    pieces = load_corpus(["bach"], tmp_path, workers=1, progress=False, limit=3)
    assert len(pieces) == 3
    assert len({p.id for p in pieces}) == 3
    for piece in pieces:
        assert piece.source == "bach" and piece.id.startswith("bach/bwv")
        score = piece.score
        assert score.resolution == 12 and score.n_tracks == 4
        assert [t.program for t in score.track_info] == list(CHORALE_PROGRAMS)
        assert all(YELLOW.time_signature_index(n, d) >= 0 for n, d in score.time_signatures)
        assert set(score.notes.track.tolist()) == {0, 1, 2, 3}
        assert score.notes.onset.max() < score.bar_ticks().max()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["bach-limit3.json", "bach-limit3.npz"]

    forbid_parsing(monkeypatch)
    again = load_corpus(["bach"], tmp_path, workers=1, progress=False, limit=3)
    assert [p.id for p in again] == [p.id for p in pieces]
    assert all(same_scores(a.score, b.score) for a, b in zip(again, pieces, strict=True))


def test_a_pickup_is_padded_so_downbeats_stay_on_bar_lines():
    from music21 import corpus as music21_corpus

    work = music21_corpus.parse("bach/bwv66.6")  # a one-beat pickup, a three-beat last bar
    score = score_from_music21(work, "chorale", YELLOW)
    assert score.n_bars == 10 and {tuple(m) for m in score.time_signatures.tolist()} == {(4, 4)}
    first_bar = score.notes.select(score.notes.bar == 0)
    assert first_bar.onset.min() == 36  # the pickup fills the fourth beat
    soprano = [n.pitch.midi for n in work.parts[0].flatten().notes if n.offset < 1]
    assert first_bar.pitch[first_bar.track == 0].tolist() == soprano
    last_bar = score.notes.select(score.notes.bar == 9)
    assert last_bar.onset.max() < 36  # the three-beat last bar, padded to four


def test_a_measure_split_in_two_becomes_one_bar():
    from music21 import corpus as music21_corpus

    work = music21_corpus.parse("bach/bwv101.7")  # measures 4 and 8 are written as 3 + 1 beats
    score = score_from_music21(work, "chorale", YELLOW)
    assert {tuple(m) for m in score.time_signatures.tolist()} == {(4, 4)}
    assert score.n_bars == 13


def test_ties_are_merged_and_dynamics_set_velocities():
    from music21 import converter, dynamics, stream

    part = converter.parse("tinyNotation: 4/4 c2 d2~ d4 e4 f2 g1")
    part.measure(1).insert(0, dynamics.Dynamic("p"))
    part.measure(2).insert(1, dynamics.Dynamic("sf"))
    part.measure(3).insert(0, dynamics.Dynamic("ff"))
    work = stream.Score([part])
    (notes,) = music21_parts(work)
    assert notes.pitch.tolist() == [60, 62, 64, 65, 67]  # the tied D once
    assert notes.onset.tolist() == [0, 24, 60, 72, 96]
    assert notes.duration.tolist() == [24, 36, 12, 24, 48]
    assert notes.dynamic.tolist() == [44, 44, 108, 44, 108]  # p, sf on beat 2 of bar 2, ff


def test_voicings_give_strings_and_choirs_their_programs():
    assert voice_programs("strings", 4) == [40, 40, 41, 42]
    assert voice_programs("choir", 5) == [52, 52, 52, 53, 53]
    assert voice_programs("chorale", 4) == list(CHORALE_PROGRAMS)
    assert set(SOURCES) >= {"bach", "palestrina", "quartets", "trecento", "monteverdi"}


# ---- MIDI folders --------------------------------------------------------------------------------
def song(n_bars: int, pitch: int, *, drums: bool = False) -> Score:
    tracks = [TrackInfo(program=33, name="bass")] + (
        [TrackInfo(program=0, is_drum=True, name="kit")] if drums else []
    )
    rows = [(0, bar, 0, 24, pitch + bar, 90) for bar in range(n_bars)]
    rows += [(1, bar, 12, 1, 42, 70) for bar in range(n_bars) if drums]
    return Score.empty(n_bars, tracks).with_notes(NoteArrays.from_rows(rows))


def test_a_midi_folder_loads_recursively_and_refreshes_when_a_file_changes(
    tmp_path, caplog, monkeypatch
):
    folder = tmp_path / "songs"
    (folder / "more").mkdir(parents=True)
    first, second = song(6, 40), song(5, 50, drums=True)
    first.to_midi(folder / "one.mid")
    second.to_midi(folder / "more" / "two.MID")
    (folder / "broken.mid").write_bytes(b"not a MIDI file")
    (folder / "notes.txt").write_text("ignored")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="sideman.engine.train.corpus"):
        pieces = load_corpus([str(folder)], cache, workers=2, progress=False)
    assert [p.id for p in pieces] == ["songs/more/two.MID", "songs/one.mid"]
    assert all(p.source == str(folder) for p in pieces)
    assert same_scores(pieces[0].score, second) and same_scores(pieces[1].score, first)
    assert pieces[0].score.track_info[1].is_drum
    assert "skipped 1 of 3 files" in caplog.text and "unreadable MIDI" in caplog.text

    forbid_parsing(monkeypatch)
    assert [p.id for p in load_corpus([str(folder)], cache, workers=1, progress=False)] == [
        p.id for p in pieces
    ]
    monkeypatch.undo()
    song(4, 60).to_midi(folder / "three.mid")
    assert len(load_corpus([str(folder)], cache, workers=1, progress=False)) == 3


def odd_meter_midi() -> mido.MidiFile:
    """One note in 5/16, a meter the yellow vocabulary does not have."""
    midi = mido.MidiFile(ticks_per_beat=96)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("time_signature", numerator=5, denominator=16, time=0))
    track.append(mido.Message("note_on", note=60, velocity=90, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=96))
    midi.tracks.append(track)
    return midi


def test_a_midi_file_in_a_meter_outside_the_vocabulary_is_skipped_and_counted(tmp_path, caplog):
    midi = odd_meter_midi()
    midi.save(tmp_path / "odd.mid")
    song(4, 45).to_midi(tmp_path / "fine.mid")
    with caplog.at_level(logging.WARNING, logger="sideman.engine.train.corpus"):
        pieces = load_corpus([str(tmp_path)], tmp_path / "cache", workers=1, progress=False)
    assert [p.id.split("/")[-1] for p in pieces] == ["fine.mid"]
    assert "meter outside the vocabulary: 1" in caplog.text


def test_a_source_that_is_neither_a_set_nor_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="'chopin' is neither a corpus set .*bach.* nor a folder"):
        load_corpus(["chopin"], tmp_path)
    with pytest.raises(CorpusError, match="workers must be >= 1"):
        load_corpus(["bach"], tmp_path, workers=0)


# ---- split ---------------------------------------------------------------------------------------
def pieces_named(n: int) -> list[Piece]:
    score = song(4, 40)
    return [Piece(f"set/piece{i:03d}", "set", score) for i in range(n)]


def test_the_split_is_by_piece_deterministic_disjoint_and_order_independent():
    pieces = pieces_named(50)
    train, validation = split_pieces(pieces, val_fraction=0.1, seed=0)
    assert len(validation) == 5 and len(train) == 45
    assert not {p.id for p in train} & {p.id for p in validation}
    assert {p.id for p in train} | {p.id for p in validation} == {p.id for p in pieces}
    shuffled = [pieces[i] for i in np.random.default_rng(1).permutation(len(pieces))]
    assert split_pieces(shuffled, 0.1, seed=0) == (train, validation)
    assert split_pieces(pieces, 0.1, seed=0) == (train, validation)
    assert {p.id for p in split_pieces(pieces, 0.1, seed=1)[1]} != {p.id for p in validation}


def test_a_new_piece_moves_at_most_one_other_across_the_split():
    before = {p.id for p in split_pieces(pieces_named(50), 0.1)[1]}
    after = {p.id for p in split_pieces(pieces_named(51), 0.1)[1]}
    assert len(before & after) >= 4


def test_small_sets_keep_a_training_piece_and_a_bad_fraction_is_refused():
    few = pieces_named(3)
    assert [len(part) for part in split_pieces(few, 0.1)] == [2, 1]
    assert [len(part) for part in split_pieces(few[:1], 0.5)] == [1, 0]
    assert split_pieces(few, 0.0) == (few, [])
    with pytest.raises(CorpusError, match="val_fraction"):
        split_pieces(few, 1.0)
