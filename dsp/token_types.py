"""Token-type codes shared by the kernels: the reference's TokenType enum ids.

They mirror ``sideman.engine.vocab.TokenType`` (dsp imports nothing of engine; a test checks
that the two agree).
"""

PIECE_START = 0
NOTE_ONSET = 1
TIME_ABSOLUTE_POS = 7
INSTRUMENT = 8
BAR = 9
BAR_END = 10
TRACK = 11
TRACK_END = 12
FILL_IN_PLACEHOLDER = 15
FILL_IN_START = 16
FILL_IN_END = 17
VELOCITY_LEVEL = 19
NOTE_DENSITY = 21
TIME_SIGNATURE = 22
NOTE_DURATION = 26
MIN_POLYPHONY = 28
MAX_POLYPHONY = 29
MIN_NOTE_DURATION = 30
MAX_NOTE_DURATION = 31
NUM_BARS = 32
PIECE_END = 70
MASK_BAR = 100  # not in yellow; sideman's own code (no reference enum id known)
N_TYPES = 128  # length of per-type lookup arrays
