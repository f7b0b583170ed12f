"""Memory of one graph that uses both sampling paths: the pack's MagicFace KSampler and the MODEL path
(Identity MODEL + ComfyUI's own sampler), on one loaded model. Run with ComfyUI's Python:

    python benchmarks/bench_comfy_memory.py COMFYUI_DIR [--pack PACK_DIR] [--size small|sd15] [--steps 2]

``--pack``: the pack's folder (default: this repository), e.g. an older commit unpacked elsewhere
(``git archive ce248fd | tar -x -C /tmp/before``) to measure before and after. CPU, float32, 512x512.
Prints one Markdown row: the process's resident memory (peak, and after the graph) and what ComfyUI's
memory management counts as loaded (the sum over ``current_loaded_models``; a UNet held by two patchers
is counted, and on a GPU placed, twice), with the number of patchers it manages.

Measured (ComfyUI v0.8.0, --cpu, ``--size small``, 313 MB of UNet weights), columns: layout, size, weights MB,
peak RSS MB, RSS after MB, RSS growth over the built model MB, patchers loaded, MB ComfyUI counts as loaded:

    | two patchers per UNet (ce248fd) | small | 313 | 5621 | 1493 | +204 | 3 | 469 |
    | one patcher per UNet (issue 19) | small | 313 | 5623 | 1333 | +26 | 2 | 313 |

(The peak is the random checkpoint being made, the same in both.)
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("comfyui_dir")
    parser.add_argument("--pack", type=Path, default=REPO)
    parser.add_argument("--size", choices=["small", "sd15"], default="small")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("comfyui_model_check", REPO / "tests" / "comfyui_model_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    pack, factories = check.setup(args.comfyui_dir, pack_dir=args.pack)

    import torch

    import comfy.model_management as mm
    import comfy.sample
    from comfyui_magicface.magicface_core import AUVector, MagicFace
    from comfyui_magicface.magicface_core.model import checkpoint

    overrides = factories.SMALL if args.size == "small" else {}
    parts = factories.random_published_parts(overrides, seed=0)
    with torch.inference_mode():
        unets = [checkpoint.build_unet(part, checkpoint.UNetCheckpoint(config, state, part), torch.float32, "cpu")
                 for part, (config, state) in parts.items()]
    del parts
    core = MagicFace(*unets)
    weights_mb = sum(p.numel() * p.element_size() for u in unets for p in u.parameters()) / 2**20
    base_rss = rss_mb()

    try:  # the pack as of this branch: one ComfyUI patcher per UNet
        from comfyui_magicface.nodes.loaded_model import LoadedMagicFace

        loaded, layout = LoadedMagicFace.wrap(core, args.size), "one patcher per UNet"
    except ImportError:  # before: a ModelPatcher per UNet for the core, another for the MODEL path
        from comfyui_magicface.nodes import host
        from comfyui_magicface.nodes.types import LoadedMagicFace

        loaded = LoadedMagicFace(core, host.ManagedModule(core.denoiser), host.ManagedModule(core.id_encoder), "x")
        layout = "two patchers per UNet"

    nodes = pack.NODE_CLASS_MAPPINGS

    def call(key, *a, **k):
        cls = nodes[key]
        out = getattr(cls(), cls.FUNCTION)(*a, **k)
        return tuple(out.result) if hasattr(out, "result") else out

    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 77, core.denoiser.config.cross_attention_dim, generator=g)
    latents = torch.randn(1, 4, 64, 64, generator=g)

    class VAE:  # a fixed encoding: the benchmark measures the UNets, not a VAE
        def encode(self, pixels):
            return latents.expand(pixels.shape[0], -1, -1, -1)

    image = torch.rand(1, 512, 512, 3, generator=g)
    au = AUVector.from_dicts([{"AU12": 2.0}])
    with torch.inference_mode():
        (identity,) = call("MagicFaceIDEncoder", magicface_model=loaded, image=image, vae=VAE(),
                           conditioning=[[text, {}]])
        call("MagicFaceKSampler", magicface_model=loaded, identity=identity, condition=image, vae=VAE(), au_delta=au,
             conditioning=[[text, {}]], seed=0, steps=args.steps, au_guidance=3.0, sampler="ddim")
        (model,) = call("MagicFaceIdentityModel", magicface_model=loaded, identity=identity)
        positive, negative, latent = call("MagicFaceEditConditioning", conditioning=[[text, {}]], condition=image,
                                          vae=VAE(), au_delta=au)
        comfy.sample.sample(model, torch.randn(1, 4, 64, 64, generator=g), args.steps, 3.0, "ddim", "ddim_uniform",
                            positive, negative, latent["samples"], disable_pbar=True, seed=0)
    counted = sum(m.model_loaded_memory() if hasattr(m, "model_loaded_memory") else m.model.loaded_size()
                  for m in mm.current_loaded_models) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| {layout} | {args.size} | {weights_mb:.0f} | {peak:.0f} | {rss_mb():.0f} | {rss_mb() - base_rss:+.0f} | "
          f"{len(mm.current_loaded_models)} | {counted:.0f} |")


if __name__ == "__main__":
    main()
