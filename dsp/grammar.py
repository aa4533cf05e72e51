"""Grammar state machine and sampler kernels over the yellow token layout (tokens.md §10, §11).

Everything here is numba and plain arrays; the vocabulary and the constraints arrive packed in one
int32 ``tables`` array (``pack_tables``), so this module never imports ``sideman.engine``.

State vector (int32, ``STATE_SIZE`` per sequence), one row per sequence:

====  ================  ==========================================================================
slot  name              meaning
====  ================  ==========================================================================
0     S_PREV_TYPE       TokenType of the last token (-1 before the first token)
1     S_TRACK_COUNT     Track tokens seen
2     S_TRACK_DRUM      current track: 0 melodic, 1 drum (from the Track value)
3     S_BARS_IN_TRACK   Bar tokens since the last Track (exact-bars rule; per-bar TimeSig pin index)
4     S_BAR_TICKS       exact length in ticks of the current bar or fill block
5     S_LAST_POS        last onset tick in the bar/block (0 at its start: positions must exceed it)
6     S_NOTES_AT_ONSET  notes at the current onset (PolyphonyConstraint)
7     S_NOTES_IN_BAR    notes in the current bar or fill block (DensityConstraint, require_notes)
8     S_IN_FILL         1 between FillInStart and FillInEnd
9     S_FILL_STARTS     FillInStart tokens seen (the current block is number S_FILL_STARTS - 1)
10    S_FILL_ENDS       FillInEnd tokens seen
11    S_PLACEHOLDERS    FillInPlaceholder tokens seen (fill blocks may not outnumber them)
12    S_COMPLETE        1 once the sequence is complete (infill targets done / last track closed)
13    S_DEAD            1 once the sampler found no legal next token
14    S_N_TOKENS        tokens consumed
15    S_FILL_DRUM       current fill block: 0 melodic, 1 drum, 2 unknown (both successor sets)
====  ================  ==========================================================================
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sideman.dsp.token_types import (  # noqa: F401 (re-exported for tests)
    BAR,
    BAR_END,
    FILL_IN_END,
    FILL_IN_PLACEHOLDER,
    FILL_IN_START,
    INSTRUMENT,
    MASK_BAR,
    MAX_NOTE_DURATION,
    MAX_POLYPHONY,
    MIN_NOTE_DURATION,
    MIN_POLYPHONY,
    N_TYPES,
    NOTE_DENSITY,
    NOTE_DURATION,
    NOTE_ONSET,
    NUM_BARS,
    PIECE_END,
    PIECE_START,
    TIME_ABSOLUTE_POS,
    TIME_SIGNATURE,
    TRACK,
    TRACK_END,
    VELOCITY_LEVEL,
)

STATE_SIZE = 16
S_PREV_TYPE = 0
S_TRACK_COUNT = 1
S_TRACK_DRUM = 2
S_BARS_IN_TRACK = 3
S_BAR_TICKS = 4
S_LAST_POS = 5
S_NOTES_AT_ONSET = 6
S_NOTES_IN_BAR = 7
S_IN_FILL = 8
S_FILL_STARTS = 9
S_FILL_ENDS = 10
S_PLACEHOLDERS = 11
S_COMPLETE = 12
S_DEAD = 13
S_N_TOKENS = 14
S_FILL_DRUM = 15

# Header of the packed tables: scalar settings, then start indices of the array sections.
H_VOCAB_SIZE = 0
H_N_DOMAINS = 1
H_EXACT_BARS = 2
H_MAX_TRACKS = 3
H_REQUIRE_NOTES = 4
H_AUTOREGRESSIVE = 5
H_POLYPHONY = 6
H_DENSITY = 7
H_N_FILL_TARGETS = 8
H_N_FILL_BLOCKS = 9
H_N_TIME_SIGS = 10
H_N_BAR_PINS = 11
H_OFFSETS = 12  # (N_TYPES,) first id of each type, -1 when absent
H_SIZES = 13  # (N_TYPES,) domain size of each type
H_DOMAIN_TYPES = 14  # (n_domains,) types in id order
H_ID_TYPE = 15  # (V,)
H_ID_VALUE = 16  # (V,)
H_BAR_TICKS = 17  # (n_time_sigs,) exact bar length by TimeSig value
H_FILL_DRUM = 18  # (n_fill_blocks,) 0/1
H_FILL_TICKS = 19  # (n_fill_blocks,) bar length of each fill block, <= 0 = unknown
H_TYPE_PINS = 20  # (N_TYPES,) pinned value, -1 = free
H_BAR_PINS = 21  # (n_bar_pins,) TimeSig value by bar number in the track, -1 = free
HEADER_SIZE = 22


def pack_tables(
    offsets: np.ndarray,
    sizes: np.ndarray,
    id_type: np.ndarray,
    id_value: np.ndarray,
    bar_ticks: np.ndarray,
    settings: tuple[int, int, int, int, int, int, int],
    fill_block_is_drum: np.ndarray,
    fill_block_bar_ticks: np.ndarray,
    type_pins: np.ndarray,
    bar_time_signature_pins: np.ndarray,
) -> np.ndarray:
    """Pack vocabulary tables and constraint settings into the int32 array the kernels read.

    ``settings`` = (exact_bars, max_tracks, require_notes, autoregressive, polyphony_limit,
    density_limit, n_fill_targets); 0 disables a limit.
    """
    offsets = np.asarray(offsets, dtype=np.int32)
    domain_types = np.flatnonzero(offsets >= 0).astype(np.int32)
    domain_types = domain_types[np.argsort(offsets[domain_types], kind="stable")]
    sections = [
        offsets,
        np.asarray(sizes, dtype=np.int32),
        domain_types,
        np.asarray(id_type, dtype=np.int32),
        np.asarray(id_value, dtype=np.int32),
        np.asarray(bar_ticks, dtype=np.int32),
        np.asarray(fill_block_is_drum, dtype=np.int32),
        np.asarray(fill_block_bar_ticks, dtype=np.int32),
        np.asarray(type_pins, dtype=np.int32),
        np.asarray(bar_time_signature_pins, dtype=np.int32),
    ]
    header = np.zeros(HEADER_SIZE, dtype=np.int32)
    header[H_VOCAB_SIZE] = len(id_type)
    header[H_N_DOMAINS] = len(domain_types)
    header[H_EXACT_BARS : H_N_FILL_TARGETS + 1] = settings
    header[H_N_FILL_BLOCKS] = len(sections[6])
    header[H_N_TIME_SIGS] = len(sections[5])
    header[H_N_BAR_PINS] = len(sections[9])
    start = HEADER_SIZE
    for slot, section in zip(range(H_OFFSETS, H_BAR_PINS + 1), sections, strict=True):
        header[slot] = start
        start += len(section)
    return np.concatenate([header, *sections]).astype(np.int32)


def new_states(batch: int) -> np.ndarray:
    """(batch, STATE_SIZE) int32 states before the first token."""
    states = np.zeros((batch, STATE_SIZE), dtype=np.int32)
    states[:, S_PREV_TYPE] = -1
    return states


# ---- legal next tokens ---------------------------------------------------------------------
@njit(cache=True, inline="always")
def _size(tables, token_type):
    return tables[tables[H_SIZES] + token_type]


@njit(cache=True, inline="always")
def _present(tables, token_type):
    return tables[tables[H_OFFSETS] + token_type] >= 0


@njit(cache=True, inline="always")
def _allow(tables, ranges, token_type):
    """Allow every value of a type, or only its pinned value."""
    size = _size(tables, token_type)
    pin = tables[tables[H_TYPE_PINS] + token_type]
    if pin < 0:
        ranges[2 * token_type] = 0
        ranges[2 * token_type + 1] = size
    elif pin < size:
        ranges[2 * token_type] = pin
        ranges[2 * token_type + 1] = pin + 1


@njit(cache=True)
def _allow_position(state, tables, ranges):
    # Strictly after the last onset and below the exact bar length (tokens.md §14.1, §14.11).
    density = tables[H_DENSITY]
    if density > 0 and state[S_NOTES_IN_BAR] >= density:
        return
    high = min(state[S_BAR_TICKS], _size(tables, TIME_ABSOLUTE_POS))
    pin = tables[tables[H_TYPE_PINS] + TIME_ABSOLUTE_POS]
    low = state[S_LAST_POS] + 1
    if pin >= 0:
        low = max(low, pin)
        high = min(high, pin + 1)
    if low < high:
        ranges[2 * TIME_ABSOLUTE_POS] = low
        ranges[2 * TIME_ABSOLUTE_POS + 1] = high


@njit(cache=True)
def _allow_note_start(state, tables, ranges):
    """VelocityLevel and NoteOnset, unless a polyphony or density cap is reached."""
    polyphony = tables[H_POLYPHONY]
    density = tables[H_DENSITY]
    if polyphony > 0 and state[S_NOTES_AT_ONSET] >= polyphony:
        return
    if density > 0 and state[S_NOTES_IN_BAR] >= density:
        return
    _allow(tables, ranges, VELOCITY_LEVEL)
    _allow(tables, ranges, NOTE_ONSET)


@njit(cache=True)
def _allow_bar_close(state, tables, ranges):
    """BarEnd inside a bar, FillInEnd inside a fill block; only once the bar has a note."""
    if state[S_NOTES_IN_BAR] == 0:
        return
    if state[S_IN_FILL] == 1:
        if tables[H_AUTOREGRESSIVE] == 0:
            _allow(tables, ranges, FILL_IN_END)
    else:
        _allow(tables, ranges, BAR_END)


@njit(cache=True)
def _allow_bar_or_track_end(state, tables, ranges):
    exact_bars = tables[H_EXACT_BARS]
    if exact_bars <= 0 or state[S_BARS_IN_TRACK] < exact_bars:
        _allow(tables, ranges, BAR)
    if exact_bars <= 0 or state[S_BARS_IN_TRACK] >= exact_bars:
        _allow(tables, ranges, TRACK_END)


@njit(cache=True)
def _allow_fill_start(state, tables, ranges):
    if tables[H_AUTOREGRESSIVE] != 0 or state[S_FILL_STARTS] >= state[S_PLACEHOLDERS]:
        return
    n_targets = tables[H_N_FILL_TARGETS]
    if n_targets > 0 and state[S_FILL_STARTS] >= n_targets:
        return
    _allow(tables, ranges, FILL_IN_START)


@njit(cache=True)
def _allow_bar_body(state, tables, ranges):
    """The TimeSig row of tokens.md §11.1: what may open a bar's body.

    MaskBar (vocabularies that have it) stands for a hidden bar, so like BarEnd here it ends a bar
    with no note: under ``require_notes`` both are forbidden, and a model can never sample a masked
    bar. Prompts carrying `Bar TimeSig MaskBar BarEnd` (mask mode "token") are followed by the
    non-strict advance, as empty context shells are; a strict advance judges them like sampling.
    """
    _allow_position(state, tables, ranges)
    _allow_note_start(state, tables, ranges)
    if tables[H_AUTOREGRESSIVE] == 0:
        _allow(tables, ranges, FILL_IN_PLACEHOLDER)
    if tables[H_REQUIRE_NOTES] == 0:
        if _present(tables, MASK_BAR):
            _allow(tables, ranges, MASK_BAR)
        _allow(tables, ranges, BAR_END)


@njit(cache=True)
def _allow_track_attributes(tables, ranges):
    _allow(tables, ranges, NOTE_DENSITY)
    _allow(tables, ranges, MIN_POLYPHONY)
    _allow(tables, ranges, MAX_POLYPHONY)
    _allow(tables, ranges, MIN_NOTE_DURATION)
    _allow(tables, ranges, MAX_NOTE_DURATION)


@njit(cache=True)
def _after_note(state, tables, ranges):
    """Successors of a finished note: melodic NoteDuration or drum NoteOnset."""
    _allow_note_start(state, tables, ranges)
    _allow_position(state, tables, ranges)
    _allow_bar_close(state, tables, ranges)


@njit(cache=True)
def legal_ranges(state, tables, ranges):
    """Write the legal value range [low, high) of every type into ``ranges`` (2·N_TYPES int32).

    Returns the number of legal tokens; 0 for a complete state.
    """
    ranges[:] = 0
    if state[S_COMPLETE] != 0 or state[S_DEAD] != 0:
        return 0
    prev = state[S_PREV_TYPE]
    if prev == -1:
        _allow(tables, ranges, PIECE_START)
    elif prev == PIECE_START:
        _allow(tables, ranges, NUM_BARS)
        _allow(tables, ranges, TRACK)
    elif prev == NUM_BARS:
        _allow(tables, ranges, TRACK)
    elif prev == TRACK:
        _allow(tables, ranges, INSTRUMENT)
        _allow_bar_or_track_end(state, tables, ranges)
    elif (
        prev == INSTRUMENT
        or prev == NOTE_DENSITY
        or prev == MIN_POLYPHONY
        or prev == MAX_POLYPHONY
        or prev == MIN_NOTE_DURATION
        or prev == MAX_NOTE_DURATION
    ):
        _allow_track_attributes(tables, ranges)
        _allow_bar_or_track_end(state, tables, ranges)
    elif prev == BAR:
        # Every bar repeats its TimeSig (§3.1); the exact bar length and the per-bar pin need it.
        if _present(tables, TIME_SIGNATURE):
            bar_number = state[S_BARS_IN_TRACK] - 1
            pin = -1
            if bar_number < tables[H_N_BAR_PINS]:
                pin = tables[tables[H_BAR_PINS] + bar_number]
            if pin < 0:
                _allow(tables, ranges, TIME_SIGNATURE)
            elif pin < _size(tables, TIME_SIGNATURE):
                ranges[2 * TIME_SIGNATURE] = pin
                ranges[2 * TIME_SIGNATURE + 1] = pin + 1
        else:
            _allow_bar_body(state, tables, ranges)
    elif prev == TIME_SIGNATURE:
        _allow_bar_body(state, tables, ranges)
    elif prev == TIME_ABSOLUTE_POS:
        _allow_note_start(state, tables, ranges)
        _allow_bar_close(state, tables, ranges)
    elif prev == VELOCITY_LEVEL:
        _allow(tables, ranges, NOTE_ONSET)
    elif prev == NOTE_ONSET:
        drum = state[S_FILL_DRUM] if state[S_IN_FILL] == 1 else state[S_TRACK_DRUM]
        if drum != 1 and _present(tables, NOTE_DURATION):
            _allow(tables, ranges, NOTE_DURATION)
        if drum != 0 or not _present(tables, NOTE_DURATION):
            _after_note(state, tables, ranges)
    elif prev == NOTE_DURATION:
        _after_note(state, tables, ranges)
    elif prev == BAR_END:
        _allow_fill_start(state, tables, ranges)
        _allow_bar_or_track_end(state, tables, ranges)
    elif prev == TRACK_END:
        max_tracks = tables[H_MAX_TRACKS]
        if max_tracks <= 0 or state[S_TRACK_COUNT] < max_tracks:
            _allow(tables, ranges, TRACK)
        _allow_fill_start(state, tables, ranges)
        _allow(tables, ranges, PIECE_END)
    elif prev == FILL_IN_START:
        _allow_position(state, tables, ranges)
        _allow_note_start(state, tables, ranges)
    elif prev == FILL_IN_END:
        _allow_fill_start(state, tables, ranges)
        _allow(tables, ranges, PIECE_END)
    elif prev == FILL_IN_PLACEHOLDER or prev == MASK_BAR:
        _allow(tables, ranges, BAR_END)

    n_legal = 0
    for d in range(tables[H_N_DOMAINS]):
        token_type = tables[tables[H_DOMAIN_TYPES] + d]
        n_legal += ranges[2 * token_type + 1] - ranges[2 * token_type]
    return n_legal


@njit(cache=True)
def is_legal(state, tables, ranges, token):
    if token < 0 or token >= tables[H_VOCAB_SIZE]:
        return False
    legal_ranges(state, tables, ranges)
    token_type = tables[tables[H_ID_TYPE] + token]
    value = tables[tables[H_ID_VALUE] + token]
    return ranges[2 * token_type] <= value < ranges[2 * token_type + 1]


# ---- advancing -----------------------------------------------------------------------------
@njit(cache=True)
def _reset_bar(state):
    state[S_LAST_POS] = 0
    state[S_NOTES_AT_ONSET] = 0
    state[S_NOTES_IN_BAR] = 0


@njit(cache=True)
def step(state, tables, token):
    """Advance one state by one token (no legality check)."""
    token_type = tables[tables[H_ID_TYPE] + token]
    value = tables[tables[H_ID_VALUE] + token]
    if token_type == TRACK:
        state[S_TRACK_COUNT] += 1
        state[S_TRACK_DRUM] = 1 if value == 1 else 0
        state[S_BARS_IN_TRACK] = 0
    elif token_type == BAR:
        state[S_BARS_IN_TRACK] += 1
        state[S_BAR_TICKS] = _size(tables, TIME_ABSOLUTE_POS)
        _reset_bar(state)
    elif token_type == TIME_SIGNATURE:
        if value < tables[H_N_TIME_SIGS]:
            state[S_BAR_TICKS] = tables[tables[H_BAR_TICKS] + value]
        else:
            state[S_BAR_TICKS] = _size(tables, TIME_ABSOLUTE_POS)
    elif token_type == TIME_ABSOLUTE_POS:
        state[S_LAST_POS] = value
        state[S_NOTES_AT_ONSET] = 0
    elif token_type == NOTE_ONSET:
        state[S_NOTES_AT_ONSET] += 1
        state[S_NOTES_IN_BAR] += 1
    elif token_type == BAR_END:
        state[S_NOTES_AT_ONSET] = 0
        state[S_NOTES_IN_BAR] = 0
    elif token_type == FILL_IN_PLACEHOLDER:
        state[S_PLACEHOLDERS] += 1
    elif token_type == FILL_IN_START:
        block = state[S_FILL_STARTS]
        state[S_FILL_STARTS] += 1
        state[S_IN_FILL] = 1
        state[S_FILL_DRUM] = 2
        state[S_BAR_TICKS] = _size(tables, TIME_ABSOLUTE_POS)
        if block < tables[H_N_FILL_BLOCKS]:
            state[S_FILL_DRUM] = tables[tables[H_FILL_DRUM] + block]
            ticks = tables[tables[H_FILL_TICKS] + block]
            if ticks > 0:
                state[S_BAR_TICKS] = ticks
        _reset_bar(state)
    elif token_type == FILL_IN_END:
        state[S_IN_FILL] = 0
        state[S_FILL_ENDS] += 1
        _reset_bar(state)
    state[S_PREV_TYPE] = token_type
    state[S_N_TOKENS] += 1

    n_targets = tables[H_N_FILL_TARGETS]
    max_tracks = tables[H_MAX_TRACKS]
    if token_type == PIECE_END:
        state[S_COMPLETE] = 1
    elif n_targets > 0:
        if state[S_FILL_ENDS] >= n_targets:
            state[S_COMPLETE] = 1
    elif token_type == TRACK_END and max_tracks > 0 and state[S_TRACK_COUNT] >= max_tracks:
        state[S_COMPLETE] = 1


@njit(cache=True)
def advance_prompt(states, tables, ranges, ids, strict):
    """Step every row through the same ids. Returns (position, row) of the first illegal token
    when ``strict`` (stopping there), else (-1, -1)."""
    for row in range(states.shape[0]):
        for position in range(ids.shape[0]):
            token = ids[position]
            if strict and not is_legal(states[row], tables, ranges, token):
                return position, row
            step(states[row], tables, token)
    return -1, -1


@njit(cache=True)
def advance_rows(states, tables, ranges, ids, strict):
    """Step row b through ids[b, :]; ids < 0 are skipped. Returns (position, row) as above."""
    for row in range(states.shape[0]):
        for position in range(ids.shape[1]):
            token = ids[row, position]
            if token < 0:
                continue
            if strict and not is_legal(states[row], tables, ranges, token):
                return position, row
            step(states[row], tables, token)
    return -1, -1


@njit(cache=True)
def legal_mask(states, tables, ranges, mask):
    """Fill the (B, V) bool mask of legal next tokens."""
    domain_types = tables[H_DOMAIN_TYPES]
    offsets = tables[H_OFFSETS]
    for row in range(states.shape[0]):
        mask[row, :] = False
        legal_ranges(states[row], tables, ranges)
        for d in range(tables[H_N_DOMAINS]):
            token_type = tables[domain_types + d]
            first = tables[offsets + token_type]
            for value in range(ranges[2 * token_type], ranges[2 * token_type + 1]):
                mask[row, first + value] = True


@njit(cache=True)
def complete(states, tables, ranges, out):
    """out[b] = the sequence is complete or has no legal next token."""
    for row in range(states.shape[0]):
        out[row] = legal_ranges(states[row], tables, ranges) == 0


# ---- sampling --------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _sift_down(heap, size, root, probs):
    """Restore the max-heap property below ``root`` (heap holds candidate indices)."""
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and probs[heap[child + 1]] > probs[heap[child]]:
            child += 1
        if probs[heap[child]] <= probs[heap[root]]:
            return
        heap[root], heap[child] = heap[child], heap[root]
        root = child


@njit(cache=True, inline="always")
def _pop_max(heap, size, probs):
    top = heap[0]
    heap[0] = heap[size - 1]
    _sift_down(heap, size - 1, 0, probs)
    return top


@njit(cache=True)
def _gather_probs(logits_row, state, tables, ranges, temperature, cand_ids, probs):
    """Legal candidates with a non-zero float32 softmax(logits / temperature) probability;
    uniform over all legal tokens when the softmax is degenerate (NaN or mass < 1e-6).

    Returns the number of candidates (0 when none is legal).
    """
    n_legal = legal_ranges(state, tables, ranges)
    if n_legal == 0:
        return 0
    domain_types = tables[H_DOMAIN_TYPES]
    offsets = tables[H_OFFSETS]
    inv_temperature = np.float32(1.0 / temperature)
    n = 0
    peak = -np.inf
    for d in range(tables[H_N_DOMAINS]):
        token_type = tables[domain_types + d]
        first = tables[offsets + token_type]
        for value in range(ranges[2 * token_type], ranges[2 * token_type + 1]):
            x = logits_row[first + value] * inv_temperature
            cand_ids[n] = first + value
            probs[n] = x
            n += 1
            if x > peak:
                peak = x
    total = 0.0
    if np.isfinite(peak):
        for i in range(n):
            e = np.float32(np.exp(probs[i] - peak))
            probs[i] = e
            total += e
    # With a finite peak the largest term is exp(0) = 1, so the softmax mass is ~1 unless some
    # logit is NaN or +inf (where torch's softmax gives NaN): that is the degenerate case.
    if np.isfinite(total) and total >= 1e-6:
        # Zero-probability tokens leave the pool here, so "a filter that would empty the pool"
        # means: would leave no token that can actually be drawn.
        scale = np.float32(1.0 / total)
        kept = 0
        for i in range(n):
            p = probs[i] * scale
            if p > 0.0:
                probs[kept] = p
                cand_ids[kept] = cand_ids[i]
                kept += 1
        return kept
    uniform = np.float32(1.0 / n)
    for i in range(n):
        probs[i] = uniform
    return n


@njit(cache=True)
def _filter_and_draw(probs, n, top_k, top_p, mask_k, mask_p, u, heap, order):
    """Apply top_k → top_p → mask_k → mask_p to ``probs[:n]`` and draw with the uniform ``u``.

    Candidates come off a max-heap lazily, so only as many are ordered as the filters look at.
    Survivors are ``order[start:popped]`` plus, when nothing truncated the pool, the heap rest.
    Returns the index of the drawn candidate.
    """
    heap_size = 0
    popped = 0
    truncated = False
    if (0 < top_k < n) or top_p < 1.0 or mask_k > 0 or mask_p > 0.0:
        for i in range(n):
            heap[i] = i
        heap_size = n
        for root in range(n // 2 - 1, -1, -1):
            _sift_down(heap, heap_size, root, probs)
    if (0 < top_k < n) or top_p < 1.0:
        limit = top_k if 0 < top_k < n else n
        cumulative = 0.0
        while popped < limit:
            i = _pop_max(heap, heap_size, probs)
            heap_size -= 1
            order[popped] = i
            popped += 1
            cumulative += probs[i]
            if top_p < 1.0 and cumulative >= top_p:
                break
        truncated = True
        heap_size = 0
    start = 0
    if mask_k > 0 and mask_k < popped + heap_size:
        while popped < mask_k:
            order[popped] = _pop_max(heap, heap_size, probs)
            heap_size -= 1
            popped += 1
        start = mask_k
    if mask_p > 0.0:
        count = popped - start + heap_size
        mass = 0.0
        for j in range(start, popped):
            mass += probs[order[j]]
        for j in range(heap_size):
            mass += probs[heap[j]]
        target = mask_p * mass
        removed_mass = 0.0
        j = start
        while removed_mass < target:
            if j == popped:
                if heap_size == 0:
                    break
                order[popped] = _pop_max(heap, heap_size, probs)
                heap_size -= 1
                popped += 1
            removed_mass += probs[order[j]]
            j += 1
        if j - start >= count:  # never remove every survivor
            j = start + count - 1
        start = j

    if not truncated and heap_size == 0 and popped == 0:
        # No filter active: draw over the candidates in id order.
        total = 0.0
        for i in range(n):
            total += probs[i]
        target = u * total
        cumulative = 0.0
        last = n - 1
        for i in range(n):
            if probs[i] > 0.0:
                last = i
                cumulative += probs[i]
                if cumulative > target:
                    return i
        return last
    total = 0.0
    for j in range(start, popped):
        total += probs[order[j]]
    for j in range(heap_size):
        total += probs[heap[j]]
    target = u * total
    cumulative = 0.0
    last = order[start] if start < popped else heap[0]
    for j in range(start, popped + heap_size):
        i = order[j] if j < popped else heap[j - popped]
        if probs[i] > 0.0:
            last = i
            cumulative += probs[i]
            if cumulative > target:
                return i
    return last


@njit(cache=True)
def sample_step(
    logits,
    states,
    tables,
    ranges,
    temperature,
    top_k,
    top_p,
    mask_k,
    mask_p,
    uniforms,
    uniform_start,
    out,
    cand_ids,
    probs,
    heap,
    order,
):
    """Mask, softmax, filter and draw one token per row, then advance that row's state.

    Row b uses ``uniforms[uniform_start + b]``. Complete rows, and rows with no legal token
    (marked S_DEAD), get -1 and are not advanced.
    """
    for row in range(states.shape[0]):
        state = states[row]
        n = _gather_probs(logits[row], state, tables, ranges, temperature, cand_ids, probs)
        if n == 0:
            out[row] = -1
            if state[S_COMPLETE] == 0:
                state[S_DEAD] = 1
            continue
        u = uniforms[uniform_start + row]
        chosen = _filter_and_draw(probs, n, top_k, top_p, mask_k, mask_p, u, heap, order)
        token = cand_ids[chosen]
        out[row] = token
        step(state, tables, token)
