"""FineFace parity: our core against the authors' code (tvaranka/fineface) on tiny random SD 2-like weights.

  python tools/compare_fineface_with_authors.py ours --weights DIR --out ours.npz
  /work/envs/fineface-authors/bin/python tools/compare_fineface_with_authors.py authors \
      --authors-repo /tmp/ff-authors-repo --weights DIR --out authors.npz
  python tools/compare_fineface_with_authors.py reference --authors-repo /tmp/ff-authors-repo \
      --authors-python /work/envs/fineface-authors/bin/python   # writes tests/data/fineface_reference.npz

The tiny weights keep the real key layout of all three files (cross-attention width 1024, LoRA rank 32
on to_q/to_k/to_v/to_out.0 of attn1 and attn2, ``unet.`` prefixes). ``ours`` and ``reference`` write
them with :func:`write_tiny_fineface` (deterministic in one diffusers/torch version); ``authors``
only reads them. The authors' LoRA at the trained scale goes through peft (LoraConfig r=32, alpha=8);
at strength 0 it is left out, which is what their pinned diffusers 0.27.2 + peft 0.7.0 does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "fineface_reference.npz"
RANK = 32
TINY_SD2_UNET = {
    "act_fn": "silu", "attention_head_dim": 2, "block_out_channels": [32, 64], "center_input_sample": False,
    "cross_attention_dim": 1024, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 8, "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False, "use_linear_projection": True,
}
# stable-diffusion-2-1-base's scheduler/scheduler_config.json
SD21_BASE_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
STEPS = 3
GUIDANCE = 7.5
AUS = [[0, 0, 0, 0, 3.0, 0, 4.0, 0, 0, 0, 2.0, 0]]


def _randn(generator, *shape, scale=1.0):
    return torch.randn(*shape, generator=generator) * scale


def write_tiny_fineface(folder: Path, seed: int = 0, unet_config: dict = TINY_SD2_UNET) -> tuple[Path, Path]:
    """``(base, fineface)``: a diffusers base folder (unet/, scheduler/) and the three FineFace files
    (``unet_config``: another UNet's, e.g. SD 2.1-base's full size for the benchmark)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    folder = Path(folder)
    base, ff = folder / "base", folder / "fineface"
    generator = torch.Generator().manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config)
    state = {k: _randn(generator, *v.shape, scale=0.05 if v.ndim > 1 else 0.02) + (1.0 if k.endswith("norm.weight") or ".norm" in k and k.endswith("weight") else 0.0)
             for k, v in unet.state_dict().items()}
    unet.load_state_dict(state)
    unet.save_pretrained(base / "unet")
    (base / "scheduler").mkdir(parents=True, exist_ok=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD21_BASE_SCHEDULER))
    ff.mkdir(parents=True, exist_ok=True)
    modules = dict(unet.named_modules())
    attn = {}
    lora = {}
    for name, module in modules.items():
        if name.endswith("attn2"):
            inner = module.to_q.out_features
            attn[f"{name}.processor.au_to_k.weight"] = _randn(generator, inner, 1024, scale=0.03)
            attn[f"{name}.processor.au_to_v.weight"] = _randn(generator, inner, 1024, scale=0.03)
        if name.endswith(("attn1", "attn2")):
            for t in TARGETS:
                linear = modules[f"{name}.{t}"]
                lora[f"unet.{name}.{t}.lora_A.weight"] = _randn(generator, RANK, linear.in_features, scale=0.05)
                lora[f"unet.{name}.{t}.lora_B.weight"] = _randn(generator, linear.out_features, RANK, scale=0.05)
    torch.save(attn, ff / "attn_processors.ckpt")
    torch.save({"au_encoder.weight": _randn(generator, 64, 12, scale=0.2), "au_encoder.bias": _randn(generator, 64, scale=0.2)},
               ff / "au_encoder.ckpt")
    save_file(lora, str(ff / "pytorch_lora_weights.safetensors"))
    return base, ff


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"latents": torch.randn(2, 4, 8, 8, generator=g), "text": torch.randn(2, 8, 1024, generator=g),
            "noise": torch.randn(1, 4, 8, 8, generator=g), "aus": torch.tensor(AUS), "t": torch.tensor(500)}


def run_ours(weights: Path) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(ROOT))
    from magicface_core.fineface import FineFace, au_tokens

    x = inputs()
    out = {}
    for tag, strength in (("lora0", 0.0), ("trained", 1.0)):
        ff = FineFace.from_pretrained(weights / "fineface", base=weights / "base", lora_strength=strength)
        uncond, cond = au_tokens(ff.encoder, x["aus"])
        out[f"pred_{tag}"] = ff.noise_pred(x["latents"], x["t"], x["text"], torch.cat([uncond, cond])).numpy()
        out[f"sample_{tag}"] = ff.sample(x["text"][1:], x["text"][:1], x["aus"], steps=STEPS, guidance=GUIDANCE,
                                         noise=x["noise"]).numpy()
    out["token_uncond"], out["token_cond"] = (t.numpy() for t in au_tokens(ff.encoder, x["aus"]))
    return out


class _NoTextEncoder(torch.nn.Module):
    """Stands in for CLIP: the prompt embeddings are given, but diffusers 0.27 (peft backend) walks the
    text encoder's modules to unscale LoRA layers and reads its dtype."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the pipeline finds its device from parameters


def run_authors(weights: Path, repo: Path) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(repo))
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from fineface.au_attention import AUAttnProcessor, hack_unet_attn_layers
    from fineface.fineface_pipeline import AUEncoder
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    x = inputs()
    encoder = AUEncoder()
    encoder.load_state_dict(torch.load(weights / "fineface" / "au_encoder.ckpt"))
    tokens = torch.cat([encoder(torch.zeros_like(x["aus"])), encoder(x["aus"])])
    out = {"token_uncond": tokens[:1].detach().numpy(), "token_cond": tokens[1:].detach().numpy()}
    for tag in ("lora0", "trained"):
        unet = UNet2DConditionModel.from_pretrained(str(weights / "base"), subfolder="unet")
        unet.set_default_attn_processor()
        hack_unet_attn_layers(unet, AUAttnProcessor)
        unet.load_state_dict(torch.load(weights / "fineface" / "attn_processors.ckpt"), strict=False)
        if tag == "trained":
            unet.add_adapter(LoraConfig(r=RANK, lora_alpha=8, target_modules=list(TARGETS)), adapter_name="unet")
            lora = {k[len("unet."):]: v for k, v in load_file(str(weights / "fineface" / "pytorch_lora_weights.safetensors")).items()}
            result = set_peft_model_state_dict(unet, lora, adapter_name="unet")
            assert not getattr(result, "unexpected_keys", []), result.unexpected_keys
        unet.eval()
        kwargs = {"au_embedding": tokens.detach(), "au_scale": 1.0}
        with torch.no_grad():
            out[f"pred_{tag}"] = unet(x["latents"], x["t"], encoder_hidden_states=x["text"], cross_attention_kwargs=kwargs).sample.numpy()
            vae = AutoencoderKL(block_out_channels=[32], down_block_types=["DownEncoderBlock2D"],
                                up_block_types=["UpDecoderBlock2D"], latent_channels=4)
            scheduler = PNDMScheduler.from_config(SD21_BASE_SCHEDULER)
            pipe = StableDiffusionPipeline(vae=vae, text_encoder=_NoTextEncoder(), tokenizer=None, unet=unet, scheduler=scheduler,
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            latents = pipe(prompt_embeds=x["text"][1:], negative_prompt_embeds=x["text"][:1], height=8, width=8,
                           num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=x["noise"].clone(),
                           output_type="latent", cross_attention_kwargs=kwargs).images
            out[f"sample_{tag}"] = latents.numpy()
    return out


def relative(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("ours", "authors", "reference"))
    p.add_argument("--weights", type=Path)
    p.add_argument("--authors-repo", type=Path)
    p.add_argument("--authors-python", default="/work/envs/fineface-authors/bin/python")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.mode == "ours":
        if not (args.weights / "base").is_dir():
            write_tiny_fineface(args.weights)
        np.savez(args.out, **run_ours(args.weights))
    elif args.mode == "authors":
        np.savez(args.out, **run_authors(args.weights, args.authors_repo))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp)
            write_tiny_fineface(weights)
            subprocess.run([args.authors_python, __file__, "authors", "--authors-repo", str(args.authors_repo),
                            "--weights", str(weights), "--out", str(weights / "authors.npz")], check=True)
            authors = dict(np.load(weights / "authors.npz"))
            ours = run_ours(weights)
        for key in sorted(authors):
            print(f"{key}: max relative difference ours vs authors {relative(ours[key], authors[key]):.3g}")
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out or REFERENCE, **{k: v.astype(np.float32) for k, v in authors.items()})
        print(f"wrote {args.out or REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
