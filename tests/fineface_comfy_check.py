"""FineFace as a ComfyUI MODEL patch against the core, inside a real ComfyUI (run with ComfyUI's Python):

    python tests/fineface_comfy_check.py COMFYUI_DIR OUT.json

Prints/writes relative errors (max |a-b| / max |b|), float32 on the CPU:
* noise prediction of the patched MODEL (attn2 patch + LoRA at the trained scale, cond/uncond chunks)
  vs the core's FineFace UNet;
* chaining: an attn2 replacement made before ours adding a known term, and one made after ours that
  calls ours (IPAdapter_plus's Attn2Replace pattern), each vs both terms added by hand.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tools"))


def main(comfyui_dir: str, out: str) -> dict:
    from comfyui_model_check import rel, setup

    pack, _ = setup(comfyui_dir)
    import torch

    import comfy.ldm.modules.attention as attention
    import comfy.model_management
    import compare_fineface_with_authors as parity

    import importlib

    ffn = importlib.import_module("comfyui_magicface.nodes.fineface_patch")
    comfy_model = importlib.import_module("comfyui_magicface.nodes.comfy_model")
    AUVector = importlib.import_module("comfyui_magicface.magicface_core.au").AUVector
    fineface = importlib.import_module("comfyui_magicface.magicface_core.fineface")
    FineFace, au_tokens = fineface.FineFace, fineface.au_tokens
    load_unet = importlib.import_module("comfyui_magicface.magicface_core.model.sd15").load_unet

    figures = {}
    tmp = Path(tempfile.mkdtemp())
    parity.write_tiny_fineface(tmp)
    x = parity.inputs()
    aus = AUVector(x["aus"])
    core = FineFace.from_pretrained(tmp / "fineface", base=tmp / "base", lora_strength=1.0)
    uncond, cond = au_tokens(core.encoder, aus)
    want = core.noise_pred(x["latents"], x["t"], x["text"], torch.cat([uncond, cond]))

    cpu = torch.device("cpu")
    base = comfy_model.build_patcher(load_unet(tmp / "base"), False, cpu, cpu)
    patched = ffn.apply_fineface(base, tmp / "fineface", lora_strength=1.0, au_scale=1.0)
    replace = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    next(iter(replace.values())).state.set_aus(aus)
    comfy.model_management.load_models_gpu([patched])
    options = {**patched.model_options["transformer_options"], "cond_or_uncond": [1, 0]}
    with torch.no_grad():
        got = patched.model.diffusion_model(x["latents"], timesteps=x["t"].expand(2).float(), context=x["text"],
                                            transformer_options=options)
    figures["noise_pred"] = rel(got, want)
    figures["lora_applied"] = rel(got, core_lora0_pred(FineFace, tmp, x, torch, au_tokens, aus))

    # chaining, by hand at one block
    torch.manual_seed(0)
    q, k, v = torch.randn(4, 16, 32), torch.randn(4, 8, 32), torch.randn(4, 8, 32)
    extra = {"n_heads": 2, "cond_or_uncond": [1, 0]}
    known = torch.randn(1, 1, 32)

    def earlier(q, k, v, extra_options):
        return attention.optimized_attention(q, k, v, extra_options["n_heads"]) + known

    state = ffn.AUState(core.encoder, 0.7)
    state.set_aus(aus.repeat_to(2))
    weight = torch.randn(32, 1024) * 0.05
    ours = ffn.FineFaceAttention(weight, state, previous=earlier)
    tokens = torch.cat([state.uncond, state.cond])
    term = 0.7 * (tokens @ weight.t())
    plain = attention.optimized_attention(q, k, v, 2)
    hand = plain + known + term
    figures["chained_before"] = rel(ours(q, k, v, extra), hand)

    def later(q, k, v, extra_options, inner=ffn.FineFaceAttention(weight, state)):  # another pack, after ours
        return inner(q, k, v, extra_options) + 2 * known

    figures["chained_after"] = rel(later(q, k, v, extra), plain + term + 2 * known)
    Path(out).write_text(json.dumps(figures))
    print(json.dumps(figures))
    return figures


def core_lora0_pred(FineFace, tmp, x, torch, au_tokens, aus):
    ff = FineFace.from_pretrained(tmp / "fineface", base=tmp / "base", lora_strength=0.0)
    uncond, cond = au_tokens(ff.encoder, aus)
    return ff.noise_pred(x["latents"], x["t"], x["text"], torch.cat([uncond, cond]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
