"""Random model files that ComfyUI's own loaders read, built with ComfyUI's own classes.

Run with ComfyUI's Python inside a ComfyUI checkout (the integration test does this):

    python tests/support/comfyui_test_models.py COMFYUI_DIR MODELS_DIR

Writes ``checkpoints/sd15-tiny.safetensors`` (a small 320-channel UNet that ComfyUI detects
as SD 1.5, with SD 1.5's CLIP-L text encoder and VAE at full size, since ComfyUI builds those
from fixed configs), ``checkpoints/sd21-tiny.safetensors`` (the same for SD 2.1-base, FineFace's
base: cross-attention 1024, OpenCLIP-H) and ``upscale_models/tiny-x2.pth`` (a small 2x
Real-ESRGAN compact net), then loads them back through ComfyUI to be sure; and ``magicface/fineface-tiny/``, FineFace's
three files for the SD 2.1 UNet.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(comfyui_dir: str, models_dir: str) -> None:
    sys.path.insert(0, comfyui_dir)
    os.chdir(comfyui_dir)
    import torch

    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no GPU needed here
    import comfy.sd
    import comfy.sd1_clip

    torch.manual_seed(0)
    checkpoint = os.path.join(models_dir, "checkpoints", "sd15-tiny.safetensors")
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    _randomize(clip)
    _write_checkpoint(checkpoint, _tiny_unet(768, sd2=False), {f"cond_stage_model.{k}": v for k, v in clip.state_dict().items()})
    del clip
    # SD 2.1-base for FineFace: a cross-attention width of 1024, linear projections, 64-channel heads,
    # and SD 2's OpenCLIP-H text encoder at full size (ComfyUI builds it from a fixed config) in the
    # original checkpoint's key layout, converted by ComfyUI's own SD20 model config.
    import comfy.supported_models
    import comfy.text_encoders.sd2_clip

    sd21 = os.path.join(models_dir, "checkpoints", "sd21-tiny.safetensors")
    clip = comfy.text_encoders.sd2_clip.SD2ClipModel(device="cpu", dtype=torch.float32)
    _randomize(clip)
    config = comfy.supported_models.SD20({"in_channels": 4, **comfy.supported_models.SD20.unet_config})
    _write_checkpoint(sd21, _tiny_unet(1024, sd2=True), config.process_clip_state_dict_for_saving(clip.state_dict()))
    del clip

    import importlib

    SRVGGNetCompact = importlib.import_module("spandrel.architectures.Compact.__arch.SRVGG").SRVGGNetCompact

    upscaler = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=2)
    upscale_file = os.path.join(models_dir, "upscale_models", "tiny-x2.pth")
    os.makedirs(os.path.dirname(upscale_file), exist_ok=True)
    torch.save(upscaler.state_dict(), upscale_file)

    # Read both back the way ComfyUI's loader nodes do.
    model, clip_loaded, vae_loaded, _ = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=True, output_clip=True)
    assert type(model.model).__name__ == "BaseModel" and model.model.model_config.__class__.__name__ == "SD15", model.model.model_config
    model, clip_loaded, vae_loaded, _ = comfy.sd.load_checkpoint_guess_config(sd21, output_vae=True, output_clip=True)
    assert model.model.model_config.__class__.__name__ == "SD20", model.model.model_config
    assert model.model.model_type.name == "EPS"  # 2.1-base, as FineFace's; 2.1-768 would be v-prediction
    assert model.model.model_config.unet_config["context_dim"] == 1024
    _write_tiny_fineface(os.path.join(models_dir, "magicface", "fineface-tiny"), model.model.model_config.unet_config,
                         model.model.diffusion_model.state_dict())
    import spandrel

    assert spandrel.ModelLoader().load_from_file(upscale_file).scale == 2
    print("ok", checkpoint, sd21, upscale_file)


def _write_tiny_fineface(folder: str, unet_config: dict, unet_state: dict, rank: int = 4) -> None:
    """FineFace's three files in their published layout (diffusers key names) for a ComfyUI UNet: the AU
    projections of every attn2, the AU encoder, and a PEFT LoRA on both attentions' projections."""
    import torch
    from safetensors.torch import save_file

    import comfy.utils

    sys.path.insert(0, REPO)
    from magicface_core.fineface import weights as ffw

    generator = torch.Generator().manual_seed(2)

    def randn(*shape, scale):
        return torch.randn(*shape, generator=generator) * scale

    attn, lora = {}, {}
    for dkey, ckey in sorted(comfy.utils.unet_to_diffusers(unet_config).items()):
        if dkey.endswith(".attn2.to_v.weight"):
            for part in ("au_to_k", "au_to_v"):
                attn[dkey.replace("to_v.weight", f"processor.{part}.weight")] = randn(unet_state[ckey].shape[0], 1024, scale=0.03)
        if (".attn1." in dkey or ".attn2." in dkey) and dkey.endswith(tuple(f".{t}.weight" for t in ffw.LORA_TARGETS)):
            out_features, in_features = unet_state[ckey].shape[:2]
            name = dkey[: -len(".weight")]
            lora[f"unet.{name}.lora_A.weight"] = randn(rank, in_features, scale=0.05)
            lora[f"unet.{name}.lora_B.weight"] = randn(out_features, rank, scale=0.05)
    os.makedirs(folder, exist_ok=True)
    torch.save(attn, os.path.join(folder, ffw.ATTN_PROCESSORS))
    torch.save({"au_encoder.weight": randn(64, 12, scale=0.2), "au_encoder.bias": randn(64, scale=0.2)},
               os.path.join(folder, ffw.AU_ENCODER))
    save_file(lora, os.path.join(folder, ffw.LORA))


def _tiny_unet(context_dim: int, sd2: bool):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    heads = {"num_head_channels": 64} if sd2 else {"num_heads": 8}
    unet = UNetModel(
        image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[1], channel_mult=[1],
        use_spatial_transformer=True, transformer_depth=[1], transformer_depth_output=[1, 1],
        transformer_depth_middle=1, context_dim=context_dim, legacy=False, use_linear_in_transformer=sd2,
        operations=comfy.ops.manual_cast, **heads,
    )
    _randomize(unet)
    return unet


def _write_checkpoint(path: str, unet, clip_state: dict) -> None:
    """A single-file checkpoint: ``unet``, the text encoder's state (already in the checkpoint's key layout)
    and SD's VAE at full size (ComfyUI builds it from a fixed config), all fp16."""
    import torch
    from safetensors.torch import save_file

    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    torch.manual_seed(1)
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    _randomize(vae)
    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state.update(clip_state)
    state.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(state, path)


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
