"""Checkpoint bundles: both formats round-trip bit-identically; every bad bundle is a CheckpointError."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sideman.engine.checkpoint import (
    CheckpointError,
    load_bundle,
    load_model,
    save_bundle,
)
from sideman.engine.model import GPT2, ModelConfig
from sideman.engine.vocab import EncoderConfig

ENCODER = EncoderConfig.yellow()
CONFIG = ModelConfig(
    vocab_size=len(ENCODER.vocabulary), n_positions=32, n_embd=32, n_layer=2, n_head=2
)


@pytest.fixture(scope="module")
def model() -> GPT2:
    return GPT2(CONFIG, generator=torch.Generator().manual_seed(0)).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))


def pt_payload(model, **changes):
    payload = {
        "format_version": 1,
        "arch": "gpt2",
        "config": CONFIG.to_dict(),
        "encoder_config": ENCODER.to_dict(),
        "state_dict": dict(model.state_dict()),
    }
    payload.update(changes)
    return payload


def write_pt(tmp_path, payload, name="bad.pt"):
    path = tmp_path / name
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_bundle_round_trips(tmp_path, model, suffix):
    path = save_bundle(tmp_path / f"m{suffix}", model, CONFIG, ENCODER)
    bundle = load_bundle(path)
    assert bundle.format_version == (1 if suffix == ".pt" else 2)
    assert bundle.model_config == CONFIG and bundle.encoder_config == ENCODER
    assert bundle.path == path
    assert all(torch.equal(bundle.state_dict[k], v) for k, v in model.state_dict().items())


def test_both_formats_give_bit_identical_logits(tmp_path, model, ids):
    pt_model, enc_a = load_model(save_bundle(tmp_path / "m.pt", model, CONFIG, ENCODER))
    st_model, enc_b = load_model(save_bundle(tmp_path / "m.safetensors", model, CONFIG, ENCODER))
    assert enc_a == enc_b == ENCODER
    with torch.inference_mode():
        assert torch.equal(pt_model(ids), st_model(ids))
        assert torch.equal(pt_model(ids), model(ids))


def test_pt_bundle_accepts_encoder_config_as_json_string(tmp_path, model):
    path = write_pt(tmp_path, pt_payload(model, encoder_config=ENCODER.to_json()), "m.pt")
    assert load_bundle(path).encoder_config == ENCODER


def test_hf_attention_buffers_are_stripped(tmp_path, model):
    sd = dict(model.state_dict())
    for i in range(CONFIG.n_layer):
        sd[f"transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 32, 32)
        sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    path = write_pt(tmp_path, pt_payload(model, state_dict=sd), "hf.pt")
    assert len(load_bundle(path).state_dict) == 4 + 12 * CONFIG.n_layer + 1


def test_half_precision_bundle_loads_as_float32(tmp_path, model, ids):
    for dtype, suffix in [(torch.float16, ".safetensors"), (torch.bfloat16, ".pt")]:
        path = save_bundle(tmp_path / f"h{suffix}", model, CONFIG, ENCODER, weights_dtype=dtype)
        assert (
            path.stat().st_size
            < 0.6 * save_bundle(tmp_path / f"f{suffix}", model, CONFIG, ENCODER).stat().st_size
        )
        loaded, _ = load_model(path)
        assert all(p.dtype == torch.float32 for p in loaded.parameters())
        with torch.inference_mode():
            assert (loaded(ids) - model(ids)).abs().max() < 1e-2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder_config": None}, "needs the encoder config embedded"),
        ({"format_version": 3}, "format_version 3 is not supported"),
        ({"arch": "llama"}, "arch 'llama' is not supported"),
        ({"config": dict(CONFIG.to_dict(), vocab_size=600)}, "vocab_size 600 does not match"),
    ],
)
def test_bad_header_is_a_checkpoint_error(tmp_path, model, changes, message):
    with pytest.raises(CheckpointError, match=message):
        load_bundle(write_pt(tmp_path, pt_payload(model, **changes)))


def test_missing_encoder_config_key_in_safetensors(tmp_path, model):
    path = tmp_path / "no_enc.safetensors"
    meta = {"format_version": "2", "arch": "gpt2", "config": json.dumps(CONFIG.to_dict())}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="needs the encoder config embedded"):
        load_bundle(path)


def test_format_version_is_checked_before_arch(tmp_path, model):
    with pytest.raises(CheckpointError, match="format_version"):
        load_bundle(write_pt(tmp_path, pt_payload(model, format_version=9, arch="llama")))


def test_every_state_dict_problem_is_listed_in_one_message(tmp_path, model):
    sd = dict(model.state_dict())
    del sd["transformer.h.1.ln_2.bias"]
    sd["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(128, 32)  # (out, in): wrong layout
    sd["transformer.h.9.attn.c_attn.weight"] = torch.zeros(32, 96)
    with pytest.raises(CheckpointError) as info:
        load_bundle(write_pt(tmp_path, pt_payload(model, state_dict=sd)))
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "missing tensor transformer.h.1.ln_2.bias (expected shape [32])" in message
    assert (
        "mis-shaped tensor transformer.h.0.mlp.c_fc.weight: expected [32, 128], found [128, 32]"
        in message
    )
    assert "unexpected tensor transformer.h.9.attn.c_attn.weight (shape [32, 96])" in message


def test_safetensors_shape_errors_too(tmp_path, model):
    path = save_bundle(tmp_path / "m.safetensors", model, CONFIG, ENCODER)
    tensors = load_file(str(path))
    tensors["lm_head.weight"] = torch.zeros(10, 32)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(
        CheckpointError,
        match=r"mis-shaped tensor lm_head.weight: expected \[\d+, 32\], found \[10, 32\]",
    ):
        load_bundle(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_and_truncated_files_name_the_path(tmp_path, model, suffix):
    good = save_bundle(tmp_path / f"good{suffix}", model, CONFIG, ENCODER)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"this is not a checkpoint at all\n" * 10)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=str(path.name)):
            load_bundle(path)


def test_unknown_suffix_lists_the_supported_formats(tmp_path, model):
    with pytest.raises(CheckpointError, match=r"\.pt .*\.safetensors"):
        load_bundle(tmp_path / "model.bin")
    with pytest.raises(CheckpointError, match=r"\.pt .*\.safetensors"):
        save_bundle(tmp_path / "model.ckpt", model, CONFIG, ENCODER)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_bundle(tmp_path / "absent.safetensors")


def test_failed_save_leaves_the_existing_file_untouched(tmp_path, model):
    path = save_bundle(tmp_path / "m.safetensors", model, CONFIG, ENCODER)
    before = path.read_bytes()
    broken = dict(model.state_dict())
    del broken["lm_head.weight"]
    with pytest.raises(CheckpointError, match="missing tensor lm_head.weight"):
        save_bundle(path, broken, CONFIG, ENCODER)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_interrupted_write_leaves_the_existing_file_untouched(tmp_path, model, monkeypatch):
    import sideman.engine.checkpoint as checkpoint

    path = save_bundle(tmp_path / "m.pt", model, CONFIG, ENCODER)
    before = path.read_bytes()

    def exploding_save(obj, target):
        target.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(path, model, CONFIG, ENCODER)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_save_rejects_a_vocab_size_that_does_not_match_the_encoder(tmp_path):
    config = ModelConfig(vocab_size=100, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    with pytest.raises(CheckpointError, match="vocab_size 100 does not match"):
        save_bundle(tmp_path / "m.pt", GPT2(config), config, ENCODER)
