"""``sideman serve`` warms what the event loop would otherwise compile on the first bar."""

import numpy as np

from sideman.daemon.serve import warm_loop_kernels
from sideman.dsp.features import bar_features


def test_warm_up_compiles_bar_features_for_the_schedulers_argument_types():
    warm_loop_kernels()
    compiled = len(bar_features.signatures)
    # What Scheduler._send_bar passes: int32 columns sliced from NoteArrays, python-int meter.
    onset = np.array([0, 12, 24], dtype=np.int32)
    duration = np.minimum(np.array([12, 12, 48], dtype=np.int32), 48 - onset).clip(min=1)
    pitch = np.array([40, 43, 47], dtype=np.int64).astype(np.int32)
    bar_features(onset, duration, pitch, np.array([80, 90, 100], dtype=np.int32), 4, 48)
    assert len(bar_features.signatures) == compiled
