"""Training sideman's GPT-2: data sets, the training loop and its metrics.

Data: ``corpus`` (pieces from the music21 corpus and MIDI folders, parsed once into a cache by
``corpus_cache``, converted by ``music21_scores``; the train/validation split) and ``samples``
(the seeded stream of yellow training sequences).
"""
