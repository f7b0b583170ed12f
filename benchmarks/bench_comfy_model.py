"""Per-step time: MagicFace as a ComfyUI MODEL under KSampler against the core's sampler.

Run with ComfyUI's Python (it imports ComfyUI):

    python benchmarks/bench_comfy_model.py COMFYUI_DIR [--size sd15|small] [--steps 3] [--batch 1]

Both paths share one random checkpoint in the published format (``sd15``: SD 1.5's UNet size,
``small``: tests/support/factories.SMALL) and the same inputs at 512x512 (64x64 latents), float32 on the
CPU, AU guidance 3 (two UNet rows per edit), DDIM. Core: ``MagicFace.sample``. MODEL: ComfyUI's
``comfy.sample.sample`` (what KSampler calls), ``ddim`` + ``ddim_uniform``. The ID encoder is
run once before either and is not timed; per step = sampling time / steps (best of ``--repeat``).
``--attention``: ComfyUI's CPU default (sub-quadratic attention) or PyTorch's SDPA (what the core
uses). Prints one Markdown table row (size, batch, attention, steps, core ms/step, MODEL ms/step,
ratio, setup).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("comfyui_dir")
    parser.add_argument("--size", choices=["sd15", "small"], default="sd15")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--attention", choices=["comfy-default", "pytorch"], default="comfy-default",
                        help="ComfyUI's attention: its CPU default (sub-quadratic) or "
                             "--use-pytorch-cross-attention (SDPA, what the core uses)")
    args = parser.parse_args()

    import importlib.util

    spec = importlib.util.spec_from_file_location("comfyui_model_check", REPO / "tests" / "comfyui_model_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    pack, factories = check.setup(args.comfyui_dir, pytorch_attention=args.attention == "pytorch")

    import torch

    import comfy.sample
    from comfyui_magicface.magicface_core import AUVector, MagicFace
    from comfyui_magicface.magicface_core.model import checkpoint
    from comfyui_magicface.nodes.loaded_model import LoadedMagicFace

    overrides = {} if args.size == "sd15" else factories.SMALL
    parts = factories.random_published_parts(overrides, seed=0)
    unets = [checkpoint.build_unet(part, checkpoint.UNetCheckpoint(config, state, part), torch.float32, "cpu")
             for part, (config, state) in parts.items()]
    del parts
    core = MagicFace(*unets)
    loaded = LoadedMagicFace.wrap(core, args.size)
    g = torch.Generator().manual_seed(0)
    text_dim = core.denoiser.config.cross_attention_dim
    id_latents, cond_latents = torch.randn(1, 4, 64, 64, generator=g), torch.randn(1, 4, 64, 64, generator=g)
    text = torch.randn(1, 77, text_dim, generator=g)
    au = AUVector(torch.randn(args.batch, 12, generator=g))
    noise = torch.randn(args.batch, 4, 64, 64, generator=g)
    features = loaded.encode_identity(id_latents, text)
    model = pack.NODE_CLASS_MAPPINGS["MagicFaceIdentityModel"].execute(loaded, features).result[0]
    positive, negative, latent = pack.NODE_CLASS_MAPPINGS["MagicFaceEditConditioning"].execute(
        [[text, {}]], torch.zeros(1, 512, 512, 3), check._LatentVAE(cond_latents), au).result

    def timed(run) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        return best / args.steps

    with torch.inference_mode():
        core_step = timed(lambda: core.sample(features, cond_latents, au, text, steps=args.steps, guidance=3.0,
                                              sampler="ddim", noise=noise))
        model_step = timed(lambda: comfy.sample.sample(model, noise, args.steps, 3.0, "ddim", "ddim_uniform",
                                                       positive, negative, latent["samples"], disable_pbar=True,
                                                       seed=0))
    print(f"| {args.size} | {args.batch} | {args.attention} | {args.steps} | {core_step * 1000:.0f} | {model_step * 1000:.0f} "
          f"| {model_step / core_step:.3f} | torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads |")


if __name__ == "__main__":
    main()
