"""Per-step time of FineFace's UNet (attn2 AU term + merged LoRA) against the bare base UNet, same run.

    python benchmarks/bench_fineface.py [--steps 20] [--size tiny|full]

Random SD 2-like weights (tools/compare_fineface_with_authors.py): ``tiny`` (32/64 channels, 8x8
latents) or ``full`` (SD 2.1-base's own UNet config, 64x64 latents, 77 text tokens: 512x512 images);
prints figures, asserts nothing. Target: at most 1.05x (the AU term is one vector per block; the LoRA
is merged into the weights), which holds where the UNet's own work dominates, as at full size.

A second, separately loaded copy of the base UNet is timed the same way: its ratio to the first is
the noise floor of the run (two identical networks differ by a few per cent on a CPU), so a FineFace
ratio within it is no overhead at all.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import compare_fineface_with_authors as parity  # noqa: E402


# stable-diffusion-2-1-base's unet/config.json (the parts that shape the network)
SD21_BASE_UNET = {
    **parity.TINY_SD2_UNET,
    "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "sample_size": 64,
}


def main() -> None:
    from magicface_core.fineface import FineFace, au_tokens
    from magicface_core.model.sd15 import load_unet

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = parity.TINY_SD2_UNET if args.size == "tiny" else SD21_BASE_UNET
        base, ff_dir = parity.write_tiny_fineface(Path(tmp), unet_config=config)
        ff = FineFace.from_pretrained(ff_dir, base=base, lora_strength=1.0)
        bare, bare_copy = load_unet(base), load_unet(base)
        x = parity.inputs()
        if args.size == "full":
            g = torch.Generator().manual_seed(1)
            x = {**x, "latents": torch.randn(2, 4, 64, 64, generator=g), "text": torch.randn(2, 77, 1024, generator=g)}
        tokens = torch.cat(au_tokens(ff.encoder, x["aus"]))

        def fineface():
            ff.noise_pred(x["latents"], x["t"], x["text"], tokens)

        def plain(unet):
            @torch.no_grad()
            def run():
                unet(x["latents"], x["t"], encoder_hidden_states=x["text"])
            return run

        # Steps alternate between the three, and each keeps its fastest: a machine whose load changes
        # during the run slows all alike (blocks of steps each would not).
        runs = {"base": plain(bare), "base copy": plain(bare_copy), "fineface": fineface}
        times = {name: [] for name in runs}
        for step in range(args.steps + 1):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                if step:  # step 0 warms up
                    times[name].append(time.perf_counter() - start)
        best = {name: min(values) for name, values in times.items()}
        median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.size} UNet, batch 2 (CFG), {args.steps} steps each, fastest (median) ms/step:")
    for name in runs:
        print(f"  {name:10s} {best[name] * 1e3:10.2f} ({median[name] * 1e3:.2f})  "
              f"ratio to base {best[name] / best['base']:.3f}x")
    print(f"FineFace (patch + LoRA) / base: {best['fineface'] / best['base']:.3f}x; "
          f"noise floor (base copy / base): {best['base copy'] / best['base']:.3f}x")


if __name__ == "__main__":
    main()
