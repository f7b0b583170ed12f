"""Per-step time of FineFace's UNet (attn2 AU term + merged LoRA) against the bare base UNet, same run.

    python benchmarks/bench_fineface.py [--steps 20]

Tiny random SD 2-like weights (tools/compare_fineface_with_authors.py); prints figures, asserts nothing.
Target: at most 1.05x (the AU term is one vector per block; the LoRA is merged into the weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def main() -> None:
    import compare_fineface_with_authors as parity
    from magicface_core.fineface import FineFace, au_tokens
    from magicface_core.model.sd15 import load_unet

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, ff_dir = parity.write_tiny_fineface(Path(tmp))
        ff = FineFace.from_pretrained(ff_dir, base=base, lora_strength=1.0)
        bare = load_unet(base)
        x = parity.inputs()
        tokens = torch.cat(au_tokens(ff.encoder, x["aus"]))

        def fineface():
            ff.noise_pred(x["latents"], x["t"], x["text"], tokens)

        @torch.no_grad()
        def plain():
            bare(x["latents"], x["t"], encoder_hidden_states=x["text"])

        times = {}
        for _ in range(2):  # interleaved rounds, best of each
            for name, fn in (("base", plain), ("fineface", fineface)):
                fn()
                start = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                times[name] = min(times.get(name, 1e9), (time.perf_counter() - start) / args.steps)
    print(f"base UNet: {times['base'] * 1e3:.2f} ms/step; FineFace (patch + LoRA): {times['fineface'] * 1e3:.2f} ms/step; "
          f"ratio {times['fineface'] / times['base']:.3f}x")


if __name__ == "__main__":
    main()
