"""The GPU check (issue 19): one script, one table, under 10 minutes on one CUDA device.

    python benchmarks/gpu_check.py [--comfyui COMFYUI_DIR] [--steps 10]

On random weights of SD 1.5's size (the published MagicFace format, and a random SD 1.5-shaped VAE):

1. precision: fp16 and bf16 against fp32, the same edit from the same noise (DDIM): the largest
   relative difference of the latents and of the decoded pixels;
2. speed and memory, batch 1 and batch 8 (fp16): per-step time and CUDA peak memory of the core
   sampler (diffusers UNets), and, with ``--comfyui`` (run it with that ComfyUI's Python), of the MODEL
   path (Identity MODEL + ComfyUI's sampler, what KSampler runs) and of the pack's MagicFace KSampler
   (the core loop on ComfyUI's UNet), both under dynamic VRAM set up as ComfyUI's main.py does
   (comfy-aimdo; ``CoreModelPatcher`` -> ``ModelPatcherDynamic``) where that ComfyUI has it.

Any row that fails prints its error in the table instead of stopping the check. Without CUDA it refuses
before building anything.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS: list[tuple[str, ...]] = []
HEADER = ("check", "dtype", "batch", "ms/step", "peak GiB", "latents rel. err", "pixels rel. err", "note")


def row(*cells) -> None:
    ROWS.append(tuple(str(c) for c in cells) + ("",) * (len(HEADER) - len(cells)))


def print_table() -> None:
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for cells in ROWS:
        print("| " + " | ".join(cells) + " |")


def rel(a, b) -> str:
    a, b = a.double(), b.double()
    return f"{float((a - b).abs().max() / b.abs().max()):.2e}"


def guarded(name: str, dtype: str, batch, run) -> None:
    try:
        run()
    except Exception as error:  # the table says which part failed and why; the others still run
        row(name, dtype, batch, "", "", "", "", f"FAILED: {type(error).__name__}: {str(error)[:160]}")
        traceback.print_exc(file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfyui", help="a ComfyUI source tree (run with its Python) for the MODEL path rows")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False). This check measures fp16/bf16 "
              "and dynamic VRAM on an NVIDIA GPU; run it on a machine with one. Nothing was run.", file=sys.stderr)
        return 2
    if args.comfyui:  # before the pack: ComfyUI's modules first on the path, as inside ComfyUI
        sys.path.insert(0, args.comfyui)
    sys.path.insert(0, str(REPO))
    from tests.support.factories import random_published_parts

    from magicface_core import AUVector, MagicFace
    from magicface_core.model import checkpoint

    started = time.perf_counter()
    device = torch.device("cuda")
    parts = random_published_parts({}, seed=0)  # {}: SD 1.5's own UNet config
    unets = {part: checkpoint.build_unet(part, checkpoint.UNetCheckpoint(config, state, part), torch.float32, "cpu")
             for part, (config, state) in parts.items()}
    del parts
    g = torch.Generator().manual_seed(0)
    text_dim = unets[checkpoint.DENOISER].config.cross_attention_dim
    id_latents, cond_latents = torch.randn(1, 4, 64, 64, generator=g), torch.randn(1, 4, 64, 64, generator=g)
    text = torch.randn(1, 77, text_dim, generator=g)
    noise = torch.randn(8, 4, 64, 64, generator=g)
    aus = AUVector(torch.randn(8, 12, generator=g).clamp(-3, 3))
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

    def core_at(dtype):
        import copy

        return MagicFace(copy.deepcopy(unets[checkpoint.DENOISER]), copy.deepcopy(unets[checkpoint.ID_ENCODER]),
                         "cpu").to(device, dtype)

    vae = _sd15_vae().to(device)

    def decode(latents):
        with torch.no_grad():
            return vae.decode(latents.to(device, torch.float32)).sample.float().clamp(-1, 1).cpu()

    # 1. precision against fp32
    reference = {}
    for name, dtype in dtypes.items():
        def precision(name=name, dtype=dtype):
            core = core_at(dtype)
            features = core.encode_identity(id_latents, text)
            latents = core.sample(features, cond_latents, aus[:1], text, steps=args.steps, sampler="ddim",
                                  noise=noise[:1]).float().cpu()
            pixels = decode(latents)
            if name == "fp32":
                reference.update(latents=latents, pixels=pixels)
                row("precision", name, 1, "", "", "reference", "reference")
            else:
                row("precision", name, 1, "", "", rel(latents, reference["latents"]), rel(pixels, reference["pixels"]))
            del core
            torch.cuda.empty_cache()
        guarded("precision", name, 1, precision)

    # 2. speed and memory of the core sampler
    def measure(run) -> tuple[str, str]:
        run(1)  # warm-up (kernels, allocator)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        run(args.steps)
        torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / args.steps
        return f"{per_step * 1000:.1f}", f"{torch.cuda.max_memory_allocated() / 2**30:.2f}"

    core = core_at(torch.float16)
    features = core.encode_identity(id_latents, text)
    for batch in (1, 8):
        def core_speed(batch=batch):
            ms, peak = measure(lambda steps: core.sample(features, cond_latents, aus[:batch], text, steps=steps,
                                                         sampler="ddim", noise=noise[:batch]))
            row("core sampler (diffusers)", "fp16", batch, ms, peak, "", "", "guidance 3: 2 UNet rows per edit")
        guarded("core sampler (diffusers)", "fp16", batch, core_speed)
    del core
    torch.cuda.empty_cache()

    # 3. inside ComfyUI: the MODEL path and the pack's sampler, under dynamic VRAM where it exists
    if args.comfyui:
        guarded("ComfyUI setup", "fp16", "", lambda: _comfy_rows(args, unets, id_latents, cond_latents, text, noise,
                                                                  aus, measure))
    else:
        row("MODEL path", "fp16", "", "", "", "", "", "skipped: give --comfyui COMFYUI_DIR (and run its Python)")
    row("total", "", "", "", "", "", "", f"{time.perf_counter() - started:.0f} s")
    print_table()
    return 0


def _sd15_vae():
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)  # a fixed random VAE
    return AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         sample_size=512).eval()


def _comfy_rows(args, unets, id_latents, cond_latents, text, noise, aus, measure) -> None:
    import copy
    import importlib.util

    import torch

    import comfy.cli_args  # noqa: F401 - parsed defaults, as main.py
    import comfy.model_management as mm
    import comfy.model_patcher

    dynamic = "no (this ComfyUI has no ModelPatcherDynamic)"
    if hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        import comfy.memory_management
        import comfy_aimdo.control

        try:
            comfy_aimdo.control.init()
        except Exception as error:
            dynamic = f"no (comfy_aimdo.control.init: {error})"
        else:
            devices = [d.index for d in mm.get_all_torch_devices()]
            try:
                ok = comfy_aimdo.control.init_devices((d, 0) for d in devices)
            except TypeError:
                ok = comfy_aimdo.control.init_devices(iter(devices))
            if ok:
                comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
                comfy.memory_management.aimdo_enabled = True
                dynamic = "yes"
            else:
                dynamic = "no (comfy-aimdo found no working device)"

    spec = importlib.util.spec_from_file_location("comfyui_magicface", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_magicface"] = pack
    spec.loader.exec_module(pack)
    import comfy.sample
    from comfyui_magicface.magicface_core import MagicFace
    from comfyui_magicface.magicface_core.model import checkpoint
    from comfyui_magicface.nodes.loaded_model import LoadedMagicFace

    with torch.inference_mode():  # as ComfyUI runs its loader node
        core = MagicFace(copy.deepcopy(unets[checkpoint.DENOISER]).half(), copy.deepcopy(unets[checkpoint.ID_ENCODER]).half(),
                         mm.unet_offload_device())
        core.set_execution_device(mm.get_torch_device())
        loaded = LoadedMagicFace.wrap(core, "sd15-random")
    kind = type(loaded.patchers["denoiser"]).__name__
    nodes = pack.NODE_CLASS_MAPPINGS

    class VAE:
        def __init__(self, latents):
            self.latents = latents

        def encode(self, pixels):
            return self.latents.expand(pixels.shape[0], -1, -1, -1)

    with torch.inference_mode():
        features = loaded.encode_identity(id_latents, text)
        model = nodes["MagicFaceIdentityModel"].execute(loaded, features).result[0]
        for batch in (1, 8):
            def model_path(batch=batch):
                positive, negative, latent = nodes["MagicFaceEditConditioning"].execute(
                    [[text, {}]], torch.zeros(1, 512, 512, 3), VAE(cond_latents), aus[:batch]).result
                ms, peak = measure(lambda steps: comfy.sample.sample(
                    model, noise[:batch], steps, 3.0, "ddim", "ddim_uniform", positive, negative, latent["samples"],
                    disable_pbar=True, seed=0))
                row("MODEL path (KSampler)", "fp16", batch, ms, peak, "", "", f"{kind}; dynamic VRAM: {dynamic}")

            def pack_sampler(batch=batch):
                ms, peak = measure(lambda steps: loaded.sample(features, cond_latents, aus[:batch], text, steps=steps,
                                                               sampler="ddim", noise=noise[:batch]))
                row("pack KSampler (ComfyUI UNet)", "fp16", batch, ms, peak, "", "", f"{kind}; dynamic VRAM: {dynamic}")

            guarded("MODEL path (KSampler)", "fp16", batch, model_path)
            guarded("pack KSampler (ComfyUI UNet)", "fp16", batch, pack_sampler)


if __name__ == "__main__":
    sys.exit(main())
