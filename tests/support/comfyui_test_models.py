"""Random model files that ComfyUI's own loaders read, built with ComfyUI's own classes.

Run with ComfyUI's Python inside a ComfyUI checkout (the integration test does this):

    python tests/support/comfyui_test_models.py COMFYUI_DIR MODELS_DIR

Writes ``checkpoints/sd15-tiny.safetensors`` (a small 320-channel UNet that ComfyUI detects
as SD 1.5, with SD 1.5's CLIP-L text encoder and VAE at full size, since ComfyUI builds those
from fixed configs) and ``upscale_models/tiny-x2.pth`` (a small 2x Real-ESRGAN compact net),
then loads both back through ComfyUI to be sure.
"""

from __future__ import annotations

import os
import sys


def main(comfyui_dir: str, models_dir: str) -> None:
    sys.path.insert(0, comfyui_dir)
    os.chdir(comfyui_dir)
    import torch
    from safetensors.torch import save_file

    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no GPU needed here
    import comfy.ops
    import comfy.sd
    import comfy.sd1_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    ops = comfy.ops.disable_weight_init
    unet = UNetModel(
        image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[1], channel_mult=[1],
        num_heads=8, use_spatial_transformer=True, transformer_depth=[1], transformer_depth_output=[1, 1],
        transformer_depth_middle=1, context_dim=768, legacy=False, use_linear_in_transformer=False,
        operations=comfy.ops.manual_cast,
    )
    _randomize(unet)
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    _randomize(clip)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    _randomize(vae)
    del ops

    state = {}
    for prefix, module in (("model.diffusion_model.", unet), ("cond_stage_model.", clip), ("first_stage_model.", vae)):
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                value = value.half()
            state[prefix + key] = value.contiguous()
    checkpoint = os.path.join(models_dir, "checkpoints", "sd15-tiny.safetensors")
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    save_file(state, checkpoint)

    import importlib

    SRVGGNetCompact = importlib.import_module("spandrel.architectures.Compact.__arch.SRVGG").SRVGGNetCompact

    upscaler = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=2)
    upscale_file = os.path.join(models_dir, "upscale_models", "tiny-x2.pth")
    os.makedirs(os.path.dirname(upscale_file), exist_ok=True)
    torch.save(upscaler.state_dict(), upscale_file)

    # Read both back the way ComfyUI's loader nodes do.
    model, clip_loaded, vae_loaded, _ = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=True, output_clip=True)
    assert type(model.model).__name__ == "BaseModel" and model.model.model_config.__class__.__name__ == "SD15", model.model.model_config
    import spandrel

    assert spandrel.ModelLoader().load_from_file(upscale_file).scale == 2
    print("ok", checkpoint, upscale_file)


def _randomize(module) -> None:
    """ComfyUI's ops skip weight init; give every weight small random values instead of memory garbage."""
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
