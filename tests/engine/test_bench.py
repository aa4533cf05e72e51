"""The benchmark suites run end to end and print their figures (no timing is asserted)."""

from sideman.engine import bench


def test_tokenizer_bench_prints_every_stage(capsys):
    figures = bench.run_tokenizer_bench(quick=True)
    out = capsys.readouterr().out
    for label in ("MIDI file -> token ids", "encode only", "decode only", "cores: "):
        assert label in out
    assert all(value > 0 for value in figures.values())


def test_generate_bench_reports_prompt_and_model_figures(capsys):
    figures = bench.run_generate_bench(quick=True, threads=1)
    out = capsys.readouterr().out
    assert "end-to-end infill bar" in out and "same-run bare-model floor" in out
    assert 500 <= figures["prompt_tokens"] <= 700  # comparable to the reference's 585-token prompt
    assert figures["generated_tokens"] > 0
    assert figures["prefill_ms"] > 0 and figures["step_ms"] > 0
