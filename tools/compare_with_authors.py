"""Check our sampler against the authors' own pipeline, on a random checkpoint in the published layout.

Their code (github.com/weimengting/MagicFace) needs diffusers 0.25.1, ours a newer diffusers,
so this runs in two steps, each in its own environment:

    # 1. in this pack's environment: random checkpoint, inputs, and our latents
    python tools/compare_with_authors.py ours --out /tmp/mf-compare
    # 2. in an environment with diffusers==0.25.1 transformers==4.42.4 "huggingface_hub<0.26"
    python tools/compare_with_authors.py authors --out /tmp/mf-compare --authors-repo PATH/TO/MagicFace

Step 2 loads the checkpoint with the authors' UNet classes, runs their ``MgPipeline`` on the
same latents and noise (output_type="latent") and prints the relative error per case.
Nothing of the authors' code is part of this pack; step 2 imports it from the path given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CASES = [  # (name, sampler, steps, guidance, AU dicts)
    ("uni_pc-50-s1.5", "uni_pc", 50, 1.5, [{"AU12": 3, "AU6": 2}]),
    ("uni_pc-50-s3", "uni_pc", 50, 3.0, [{"AU1": 2, "AU4": 4}]),
    ("uni_pc-10-s3-batch2", "uni_pc", 10, 3.0, [{"AU12": 3}, {"AU15": 2, "AU1": 1}]),
    ("ddim-25-s3", "ddim", 25, 3.0, [{"AU26": 4}]),
]


def run_ours(out: Path) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from magicface_core import AUVector, MagicFace
    from tests.support.factories import SMALL, random_inputs, write_published_checkpoint

    # The authors hard-code au_aug_mlp to 1280 outputs: the time-embedding width of 320 base channels.
    config = {**SMALL, "sample_size": 16}
    write_published_checkpoint(out / "checkpoint", config, seed=3)
    model = MagicFace.from_pretrained(out / "checkpoint", device="cpu", dtype=torch.float32)
    results = {}
    for name, sampler, steps, guidance, aus in CASES:
        inputs = random_inputs(config, batch=len(aus), size=16, seed=7)
        au = AUVector.from_dicts(aus)
        features = model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
        latents = model.sample(features, inputs["cond_latents"], au, inputs["text_embeds"], steps=steps,
                               guidance=guidance, sampler=sampler, noise=inputs["noise"])
        results[name] = {**inputs, "au": au.to_tensor(), "ours": latents}
    torch.save(results, out / "cases.pt")
    print(f"wrote {len(results)} cases to {out}")


def run_authors(out: Path, repo: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UniPCMultistepScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(repo))
    from mgface.pipelines_mgface.pipeline_mgface import MgPipeline
    from mgface.pipelines_mgface.unet_ID_2d_condition import UNetID2DConditionModel
    from mgface.pipelines_mgface.unet_deno_2d_condition import UNetDeno2DConditionModel

    ckpt = out / "checkpoint"
    # The authors pass ignore_mismatched_sizes/low_cpu_mem_usage=False; strict here is what we want.
    unet_id = UNetID2DConditionModel.from_pretrained(ckpt, subfolder="ID_enc", use_safetensors=True,
                                                     low_cpu_mem_usage=False)
    unet_deno = UNetDeno2DConditionModel.from_pretrained(ckpt, subfolder="denoising_unet", use_safetensors=True,
                                                         low_cpu_mem_usage=False)
    # Only the VAE's config is read (latents go in, latents come out); a tiny one with SD's 8x factor.
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], norm_num_groups=8,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                                num_hidden_layers=1, projection_dim=32))
    class UnusedTokenizer:  # their _encode_prompt tokenizes "" for a negative prompt it then discards
        def tokenize(self, text):
            return []

        def __call__(self, *args, **kwargs):
            return None

    sd15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1, set_alpha_to_one=False, clip_sample=False, skip_prk_steps=True)
    cases = torch.load(out / "cases.pt")
    worst = 0.0
    for name, sampler, steps, guidance, _ in CASES:
        case = cases[name]
        scheduler = UniPCMultistepScheduler.from_config(sd15) if sampler == "uni_pc" else DDIMScheduler.from_config(sd15)
        pipe = MgPipeline(vae=vae, text_encoder=text_encoder, tokenizer=UnusedTokenizer(), unet_ID=unet_id, unet_deno=unet_deno,
                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                          requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        batch = case["noise"].shape[0]
        latents = pipe(
            prompt_embeds=case["text_embeds"].expand(batch, -1, -1),
            source=case["id_latents"].expand(batch, -1, -1, -1),
            bg=case["cond_latents"].expand(batch, -1, -1, -1),
            au=case["au"], num_inference_steps=steps, image_guidance_scale=guidance,
            latents=case["noise"].clone(), output_type="latent",
        ).images
        theirs = latents / 0.18215
        ours = case["ours"]
        rel = float((ours - theirs).norm() / theirs.norm())
        worst = max(worst, rel)
        print(f"{name:24s} relative error {rel:.2e}   max abs diff {float((ours - theirs).abs().max()):.2e}"
              f"   (|latents| max {float(theirs.abs().max()):.1f})")
    print(f"worst relative error: {worst:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["ours", "authors"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--authors-repo", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "ours":
        run_ours(args.out)
    else:
        if args.authors_repo is None:
            parser.error("--authors-repo is required for the authors step")
        run_authors(args.out, args.authors_repo)


if __name__ == "__main__":
    main()
