"""FineFace core against the authors' numbers (tests/data/fineface_reference.npz, written by
tools/compare_fineface_with_authors.py reference from tvaranka/fineface with diffusers 0.27.2 + peft 0.7.0)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import compare_fineface_with_authors as parity  # noqa: E402

from magicface_core.au import AUVector  # noqa: E402
from magicface_core.errors import CheckpointError, WeightsNotFoundError  # noqa: E402
from magicface_core.fineface import AUEncoder, FineFace, au_tokens, full_au_attention  # noqa: E402
from magicface_core.fineface.attention import au_term  # noqa: E402
from magicface_core.fineface.weights import lora_scale  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("fineface")
    parity.write_tiny_fineface(root)
    return root


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(parity.REFERENCE))


@pytest.fixture(scope="module")
def ours(weights):
    return parity.run_ours(weights)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("tag", ["lora0", "trained"])
def test_noise_prediction_matches_authors(ours, reference, tag):
    assert _rel(ours[f"pred_{tag}"], reference[f"pred_{tag}"]) < 1e-5


@pytest.mark.parametrize("tag", ["lora0", "trained"])
def test_three_step_pndm_matches_authors(ours, reference, tag):
    assert _rel(ours[f"sample_{tag}"], reference[f"sample_{tag}"]) < 1e-4


def test_lora_changes_the_prediction(reference):
    # the trained-scale case really exercises the LoRA (it is not a copy of the strength-0 case)
    assert _rel(reference["pred_trained"], reference["pred_lora0"]) > 1e-3


def test_tokens_match_authors(ours, reference):
    np.testing.assert_array_equal(ours["token_cond"], reference["token_cond"])
    np.testing.assert_array_equal(ours["token_uncond"], reference["token_uncond"])


def test_au_scale_zero_is_the_base_model_exactly(weights):
    from diffusers import UNet2DConditionModel

    ff = FineFace.from_pretrained(weights / "fineface", base=weights / "base", lora_strength=0.0)
    base = UNet2DConditionModel.from_pretrained(str(weights / "base"), subfolder="unet").eval()
    x = parity.inputs()
    uncond, cond = au_tokens(ff.encoder, x["aus"])
    with torch.no_grad():
        want = base(x["latents"], x["t"], encoder_hidden_states=x["text"]).sample
    got = ff.noise_pred(x["latents"], x["t"], x["text"], torch.cat([uncond, cond]), au_scale=0.0)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_one_token_term_equals_full_attention():
    torch.manual_seed(0)
    k, v = torch.nn.Linear(1024, 64, bias=False), torch.nn.Linear(1024, 64, bias=False)
    token, query = torch.randn(2, 1, 1024), torch.randn(2, 37, 64)
    full = full_au_attention(query, k, v, token, heads=4)
    torch.testing.assert_close(au_term(v, token, 1.0).expand_as(full), full, rtol=1e-6, atol=1e-6)


def test_sd2_token_layout_and_uncond_is_the_bias():
    enc = AUEncoder()
    aus = AUVector.from_dict({"AU12": 4, "AU6": 2})
    uncond, cond = au_tokens(enc, aus)
    assert cond.shape == (1, 1, 1024)
    torch.testing.assert_close(cond[0, 0, :12], aus.values[0])
    torch.testing.assert_close(cond[0, 0, 12:76], enc.au_encoder(aus.values)[0])
    assert torch.count_nonzero(cond[0, 0, 76:]) == 0
    torch.testing.assert_close(uncond[0, 0, 12:76], enc.au_encoder.bias)


def test_sd15_variant_token_layout():
    enc = AUEncoder.for_width(768)
    assert enc.au_encoder.out_features == 756
    aus = AUVector.from_dict({"AU1": 3})
    _, cond = au_tokens(enc, aus)
    assert cond.shape == (1, 1, 768)
    torch.testing.assert_close(cond[0, 0, :12], aus.values[0])
    torch.testing.assert_close(cond[0, 0, 12:], enc.au_encoder(aus.values)[0])


def test_lora_strength_scale():
    assert lora_scale(1.0, 32) == 0.25 and lora_scale(4.0, 32) == 1.0 and lora_scale(0, 32) == 0


def test_missing_file(weights, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="au_encoder.ckpt"):
        FineFace.from_pretrained(tmp_path, base=weights / "base")


def test_pickle_with_code_is_refused(weights, tmp_path):
    import shutil

    for f in (weights / "fineface").iterdir():
        shutil.copy(f, tmp_path / f.name)
    torch.save({"x": print}, tmp_path / "attn_processors.ckpt")  # a global function: code, not tensors
    with pytest.raises(CheckpointError, match="weights-only"):
        FineFace.from_pretrained(tmp_path, base=weights / "base")


def test_lora_with_unexpected_keys_is_refused(weights, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    for f in (weights / "fineface").iterdir():
        shutil.copy(f, tmp_path / f.name)
    state = load_file(str(tmp_path / "pytorch_lora_weights.safetensors"))
    state["unet.conv_in.lora_A.weight"] = torch.zeros(32, 4)
    save_file(state, str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected 1 key"):
        FineFace.from_pretrained(tmp_path, base=weights / "base")


def test_sd15_base_given_to_sd2_weights(weights, tmp_path):
    from magicface_core.errors import SettingsError
    from magicface_core.fineface.checks import check_base_width

    with pytest.raises(SettingsError, match="SD 1.5 model"):
        check_base_width(768, sd15_variant=False)
    with pytest.raises(SettingsError, match="SD 2.x model"):
        check_base_width(1024, sd15_variant=True)
