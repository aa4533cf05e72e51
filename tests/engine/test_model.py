"""GPT-2 model and KV cache: cached decoding equals the full causal forward (tokens.md §11.4, §12)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sideman.engine.model import (
    GPT2,
    PRECISIONS,
    InferenceGPT2,
    KVCache,
    KVCacheError,
    ModelConfig,
    ModelConfigError,
    choose_precision,
    int8_is_available,
)

TINY = ModelConfig(vocab_size=50, n_positions=64, n_embd=64, n_layer=2, n_head=4)
ATOL = 2e-5


@pytest.fixture(scope="module")
def model() -> GPT2:
    return GPT2(TINY, generator=torch.Generator().manual_seed(1)).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))


def reference_forward(model: GPT2, ids, position_ids=None, allowed=None):
    """Straight-line GPT-2 from the HF layout (x @ W + b), with an explicit additive mask."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.config
    B, T = ids.shape
    pos = torch.arange(T).expand(B, T) if position_ids is None else position_ids
    x = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][pos]
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool))
    if allowed is not None:
        keep = keep & allowed[:, None, None, :T]
    bias = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    hd = c.n_embd // c.n_head
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        h = F.layer_norm(x, (c.n_embd,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        qkv = h @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = (t.view(B, T, c.n_head, hd).transpose(1, 2) for t in qkv.split(c.n_embd, -1))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.n_embd)
        x = x + y @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (c.n_embd,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        h = h @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        x = x + h @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    x = F.layer_norm(
        x, (c.n_embd,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], 1e-5
    )
    return x @ sd["lm_head.weight"].T


def decode_token_by_token(runner, ids, cache, prefill: int, **kwargs):
    out = [runner(ids[:, :prefill], cache, **kwargs)]
    for t in range(prefill, ids.shape[1]):
        out.append(runner(ids[:, t : t + 1], cache, **kwargs))
    return torch.cat(out, dim=1)


# ---- config ---------------------------------------------------------------------------------------


def test_yellow_small_preset_has_20_63_m_parameters():
    model = GPT2(ModelConfig.preset("yellow_small"))
    assert model.num_parameters() == 20_626_432
    assert model.config.head_dim == 64


def test_presets_match_spec_shapes():
    assert ModelConfig.preset("yellow_medium").n_embd == 768
    assert ModelConfig.preset("yellow_large").n_layer == 24
    with pytest.raises(ModelConfigError, match="unknown model preset"):
        ModelConfig.preset("yellow_huge")


def test_config_round_trips_and_reports_bad_fields():
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    assert set(TINY.to_dict()) == {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head"}
    with pytest.raises(ModelConfigError, match="missing field.*n_head"):
        ModelConfig.from_dict({"vocab_size": 5, "n_positions": 8, "n_embd": 8, "n_layer": 1})
    with pytest.raises(ModelConfigError, match="divisible"):
        ModelConfig(n_embd=10, n_head=3)
    with pytest.raises(ModelConfigError, match="'n_layer' must be a positive int"):
        ModelConfig(n_layer=0)
    legacy = dict(TINY.to_dict(), max_seq_len=64)
    del legacy["n_positions"]
    assert ModelConfig.from_dict(legacy).n_positions == 64


def test_state_dict_names_and_shapes_follow_the_spec_table():
    from sideman.engine.checkpoint import expected_shapes

    config = ModelConfig.preset("yellow_small")
    sd = GPT2(config, initialize=False).state_dict()
    assert len(sd) == 77
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_shapes(config)
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (512, 1536)  # Conv1D (in, out)
    assert sd["lm_head.weight"].data_ptr() != sd["transformer.wte.weight"].data_ptr()


def test_init_uses_the_given_generator_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = GPT2(TINY, generator=torch.Generator().manual_seed(7))
    b = GPT2(TINY, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    w = a.transformer.h[0].mlp.c_fc.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(a.transformer.h[0].mlp.c_fc.bias) == 0


# ---- forward and cache ----------------------------------------------------------------------------


def test_full_forward_matches_the_straight_line_reference(model, ids):
    with torch.no_grad():
        assert torch.allclose(model(ids), reference_forward(model, ids), atol=ATOL)


@pytest.mark.parametrize("fast", [False, True])
def test_cached_token_by_token_decoding_equals_full_forward(model, ids, fast):
    runner = model.for_inference() if fast else model
    with torch.inference_mode():
        full = model(ids)
        cached = decode_token_by_token(runner, ids, runner.new_cache(), prefill=10)
    assert cached.dtype == torch.float32
    assert torch.allclose(cached, full, atol=ATOL)


def test_chunked_prefill_equals_full_forward(model, ids):
    with torch.inference_mode():
        full = model(ids)
        cache = model.new_cache(max_len=32)
        chunks = [model(ids[:, a:b], cache) for a, b in [(0, 7), (7, 8), (8, 19), (19, 24)]]
    assert cache.length == 24
    assert torch.allclose(torch.cat(chunks, 1), full, atol=ATOL)


def test_last_only_returns_the_last_position(model, ids):
    with torch.inference_mode():
        last = model(ids, model.new_cache(), last_only=True)
        assert last.shape == (1, 1, TINY.vocab_size)
        assert torch.allclose(last, model(ids)[:, -1:], atol=ATOL)


def test_expand_batch_decodes_identical_rows(model, ids):
    fast = model.for_inference()
    cache = fast.new_cache(batch=3)
    fast(ids[:, :10], cache)
    assert cache.expand_batch(3) is cache
    step = fast(ids[:, 10:11].expand(3, 1), cache)
    assert torch.equal(step[0], step[1]) and torch.equal(step[0], step[2])
    grown = fast.new_cache(batch=1)
    fast(ids[:, :10], grown)
    grown = grown.expand_batch(4)
    assert grown.batch == 4 and grown.length == 10
    assert torch.allclose(fast(ids[:, 10:11].expand(4, 1), grown)[3], step[0], atol=ATOL)


def test_select_row_keeps_a_candidate(model, ids):
    fast = model.for_inference()
    cache = fast.new_cache(batch=2)
    fast(ids[:, :10].expand(2, 10), cache)
    fast(torch.tensor([[3], [4]]), cache)
    cache.select_row(1)
    fresh = fast.new_cache()
    fast(torch.cat([ids[:, :10], torch.tensor([[4]])], 1), fresh)
    assert torch.allclose(fast(ids[:, 11:12], cache)[0], fast(ids[:, 11:12], fresh)[0], atol=ATOL)


def test_truncate_and_redecode_equals_fresh(model, ids):
    fast = model.for_inference()
    cache = fast.new_cache()
    fast(ids, cache)
    cache.truncate(12)
    other = torch.randint(0, TINY.vocab_size, (1, 5), generator=torch.Generator().manual_seed(3))
    resumed = fast(other, cache)
    fresh = fast(torch.cat([ids[:, :12], other], 1))[:, 12:]
    assert torch.allclose(resumed, fresh, atol=ATOL)
    with pytest.raises(KVCacheError):
        cache.truncate(18)


def test_key_mask_matches_an_additive_mask_reference(model, ids):
    allowed = torch.ones(1, TINY.n_positions, dtype=torch.bool)
    allowed[:, 5:9] = False  # a hidden bar's span
    with torch.inference_mode():
        expected = reference_forward(model, ids, allowed=allowed)
        uncached = model(ids, key_mask=allowed)
        fast = model.for_inference()
        cached = decode_token_by_token(fast, ids, fast.new_cache(), prefill=12, key_mask=allowed)
    assert torch.allclose(uncached, expected, atol=ATOL)
    assert torch.allclose(cached, expected, atol=ATOL)
    assert not torch.allclose(model(ids), expected, atol=1e-3)


def test_explicit_position_ids_are_honoured(model, ids):
    # attention_skip: a dropped span leaves a gap in positions
    positions = torch.cat([torch.arange(0, 6), torch.arange(10, 28)]).unsqueeze(0)
    with torch.inference_mode():
        expected = reference_forward(model, ids, position_ids=positions)
        fast = model.for_inference()
        cache = fast.new_cache()
        prefill = fast(ids[:, :12], cache, position_ids=positions[:, :12])
        steps = [
            fast(ids[:, t : t + 1], cache, position_ids=positions[:, t : t + 1])
            for t in range(12, 24)
        ]
    assert torch.allclose(torch.cat([prefill, *steps], 1), expected, atol=ATOL)


def test_batched_rows_are_independent(model, ids):
    batch = torch.cat([ids, ids.flip(1)])
    with torch.inference_mode():
        out = model(batch, model.new_cache(batch=2))
        assert torch.allclose(out[1:], model(ids.flip(1)), atol=ATOL)


def test_bfloat16_inference_stays_close_and_returns_float32_logits(model, ids):
    fast = model.for_inference(torch.bfloat16)
    cache = fast.new_cache()
    assert cache.dtype == torch.bfloat16
    logits = fast(ids, cache)
    assert logits.dtype == torch.float32
    assert (logits - model(ids).detach()).abs().max() < 0.05


# ---- int8 / mixed precision -----------------------------------------------------------------------

needs_int8 = pytest.mark.skipif(not int8_is_available(), reason="torch lacks quantized linear ops")
# Tolerances for int8 vs fp32. Weights are int8 per output channel (step = 1/127 of each row's
# max |w|) and activations 7-bit per call, so each quantised linear adds ~0.5-1 % relative noise.
# Measured on TINY (logits std 0.16): int8 max 0.012 / mean 0.0025, mixed max 0.012 / mean 0.0012,
# int8 token steps vs the int8 full forward max 0.021; top-1 agreement 0.92 (near-uniform random-init
# logits have near ties, so top-1 is only checked loosely). On yellow_small (585-token prompt) int8
# measured max 0.21 / mean 0.031 against logits of std 0.45. INT8_MAX is ~2-4x the measured TINY
# error and well below the logit spread, so a wrong layout or a lost bias (errors of order the
# logits themselves) cannot pass.
INT8_MAX, INT8_MEAN = 0.05, 0.01
INT8_TOP1 = 0.75


@needs_int8
@pytest.mark.parametrize("precision", ["int8", "mixed"])
def test_int8_logits_stay_close_to_fp32(model, ids, precision):
    fast = model.for_inference(precision)
    assert fast.precision == precision and fast.dtype == torch.float32
    with torch.inference_mode():
        expected = model(ids)
        cache = fast.new_cache()
        assert cache.dtype == torch.float32  # the KV cache stays fp32
        logits = decode_token_by_token(fast, ids, cache, prefill=10)
    assert logits.dtype == torch.float32
    diff = (logits - expected).abs()
    assert diff.max() < INT8_MAX and diff.mean() < INT8_MEAN
    assert (logits.argmax(-1) == expected.argmax(-1)).float().mean() >= INT8_TOP1


@needs_int8
def test_int8_really_quantises_and_mixed_prefill_is_exact_fp32(model, ids):
    with torch.inference_mode():
        expected = model(ids)
        int8 = model.for_inference("int8")(ids)
        mixed = model.for_inference("mixed")(ids)  # multi-token call: fp32 weights
    assert not torch.allclose(int8, expected, atol=1e-5)
    assert torch.allclose(mixed, expected, atol=ATOL)


@needs_int8
def test_int8_cached_decoding_equals_the_int8_full_forward(model, ids):
    fast = model.for_inference("int8")
    with torch.inference_mode():
        full = fast(ids)
        # Same token count per call as the full forward: the same activation scales, same result.
        chunked = fast(ids, fast.new_cache())
        stepped = decode_token_by_token(fast, ids, fast.new_cache(), prefill=10)
    assert torch.allclose(chunked, full, atol=ATOL)
    # Token-by-token steps quantise each token's activations with its own scale instead of one scale
    # over the whole call, so they match the full int8 forward within int8 noise, not bit for bit.
    assert (stepped - full).abs().max() < INT8_MAX
    assert (stepped.argmax(-1) == full.argmax(-1)).float().mean() >= INT8_TOP1


@needs_int8
def test_int8_batch_rows_stay_identical(model, ids):
    fast = model.for_inference("int8")
    cache = fast.new_cache(batch=3)
    fast(ids[:, :10], cache)
    cache.expand_batch(3)
    step = fast(ids[:, 10:11].expand(3, 1), cache)
    assert torch.equal(step[0], step[1]) and torch.equal(step[0], step[2])


def test_auto_precision_is_a_concrete_working_choice(model, ids):
    choice = choose_precision()
    assert choice in PRECISIONS and choice != "auto"
    if int8_is_available() and torch.backends.quantized.engine in ("x86", "fbgemm"):
        assert choice == "int8"
    fast = InferenceGPT2(model, "auto")
    assert fast.precision == choice
    logits = fast(ids, fast.new_cache())
    assert logits.dtype == torch.float32 and logits.shape == (1, ids.shape[1], TINY.vocab_size)
    assert torch.isfinite(logits).all()


def test_precision_names_and_dtypes(model):
    assert model.for_inference().precision == "fp32"
    assert model.for_inference(torch.float32).precision == "fp32"
    assert model.for_inference(torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown inference precision 'int4'.*fp32, bf16"):
        model.for_inference("int4")
    with pytest.raises(ValueError, match="unsupported inference dtype torch.int8"):
        model.for_inference(torch.int8)


def test_cache_overflow_is_an_actionable_error(model, ids):
    fast = model.for_inference()
    cache = fast.new_cache(max_len=16)
    with pytest.raises(KVCacheError, match="cache full"):
        fast(ids, cache)


def test_cache_is_preallocated_and_written_in_place(model, ids):
    fast = model.for_inference()
    cache = fast.new_cache(max_len=32)
    assert isinstance(cache, KVCache)
    k_ptr = cache.k.data_ptr()
    fast(ids[:, :4], cache)
    fast(ids[:, 4:5], cache)
    assert cache.k.data_ptr() == k_ptr and cache.k.shape == (2, 1, 4, 32, 16)
    assert cache.length == 5


def test_training_forward_has_gradients():
    model = GPT2(
        ModelConfig(vocab_size=20, n_positions=16, n_embd=32, n_layer=1, n_head=2, dropout=0.1)
    )
    ids = torch.randint(0, 20, (2, 8))
    loss = F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    loss.backward()
    assert model.transformer.h[0].attn.c_attn.weight.grad is not None
