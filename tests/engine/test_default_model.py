"""The shipped default model (engine/models/default.safetensors) loads offline by name and plays."""

import numpy as np

from sideman.engine.demo import demo_score
from sideman.engine.inference import InferenceEngine
from sideman.engine.request import GenerationRequest, InferenceConfig, TrackPrompt


def test_the_default_model_loads_by_name_and_infills_a_bass_bar_in_range():
    engine = InferenceEngine.from_pretrained("default", device="cpu", precision="fp32")
    assert engine.name and engine.encoder_config.vocabulary.size == 647
    score = demo_score().slice_bars(0, 4)
    bass = score.n_tracks - 1
    request = GenerationRequest(
        tracks=(TrackPrompt(id=bass, bars=(3,)),),
        config=InferenceConfig(model_dim=4, seed=0, density_hard_limit=16, num_candidates=1),
    )
    notes = engine.session(score, request).run().score.notes
    generated = notes.select((notes.track == bass) & (notes.bar == 3))
    assert len(generated.pitch) > 0
    assert np.all((generated.pitch >= 0) & (generated.pitch <= 127))
