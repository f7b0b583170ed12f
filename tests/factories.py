"""Small random checkpoints in the exact published formats, built by the tests themselves.

These write files the way the authors' release is laid out (diffusers folders whose configs
name the authors' classes, ``au_aug_mlp.*`` keys in the denoiser) without going through the
code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# SD 1.5's UNet config as diffusers 0.25.1 writes it (the published configs have this form).
SD15_UNET_CONFIG = {
    "act_fn": "silu",
    "addition_embed_type": None,
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": None,
    "attention_head_dim": 8,
    "attention_type": "default",
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 768,
    "cross_attention_norm": None,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dropout": 0.0,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": None,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "reverse_transformer_layers_per_block": None,
    "sample_size": 64,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": False,
}

# Tiny: 7 transformer blocks (2 down, 1 mid, 4 up), runs a 50-step edit in seconds on a CPU.
TINY = {
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "sample_size": 8,
}
# The small benchmark checkpoint the issue names: SD 1.5 widths at the first level.
SMALL = {**TINY, "block_out_channels": [320, 320], "attention_head_dim": 8}

AUTHORS_CLASS = {"denoising_unet": "UNetDeno2DConditionModel", "ID_enc": "UNetID2DConditionModel"}


def published_config(part: str, overrides: dict | None = None) -> dict:
    config = {"_class_name": AUTHORS_CLASS[part], "_diffusers_version": "0.25.1", **SD15_UNET_CONFIG}
    config.update(overrides or {})
    config["in_channels"] = 8 if part == "denoising_unet" else 4
    return config


def random_unet_state(config: dict, seed: int) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    model = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    # diffusers zero-inits nothing here, but keep every weight clearly non-trivial for the tests.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def random_published_parts(overrides: dict | None = None, seed: int = 0) -> dict[str, tuple[dict, dict]]:
    """``{part: (config, state_dict)}`` with published key names."""
    parts = {}
    for offset, part in enumerate(("denoising_unet", "ID_enc")):
        config = published_config(part, overrides)
        state = random_unet_state(config, seed + offset)
        if part == "denoising_unet":
            time_embed_dim = config["block_out_channels"][0] * 4
            generator = torch.Generator().manual_seed(seed + 10)
            state["au_aug_mlp.weight"] = torch.randn(time_embed_dim, 12, generator=generator) * 0.2
            state["au_aug_mlp.bias"] = torch.randn(time_embed_dim, generator=generator) * 0.1
        parts[part] = (config, state)
    return parts


def write_published_checkpoint(root: Path, overrides: dict | None = None, seed: int = 0,
                               parts: dict | None = None) -> Path:
    """A folder laid out like ``mengtingwei/magicface`` (both UNets)."""
    root = Path(root)
    for part, (config, state) in (parts or random_published_parts(overrides, seed)).items():
        folder = root / part
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"),
                  metadata={"format": "pt"})
    return root


def random_inputs(config_overrides: dict, batch: int = 1, size: int = 8, seed: int = 1):
    """Identity latents, condition latents, text embeddings and start noise for one edit."""
    generator = torch.Generator().manual_seed(seed)
    dim = config_overrides.get("cross_attention_dim", 768)
    return {
        "id_latents": torch.randn(1, 4, size, size, generator=generator) * 5,
        "cond_latents": torch.randn(1, 4, size, size, generator=generator) * 5,
        "text_embeds": torch.randn(1, 77, dim, generator=generator),
        "noise": torch.randn(batch, 4, size, size, generator=generator),
    }


# --- Stable Diffusion 1.5 parts (VAE, CLIP text encoder, tokenizer), tiny and random -----------

TINY_TEXT_DIM = TINY["cross_attention_dim"]


def _byte_vocab() -> dict[str, int]:
    """CLIP's byte-level vocabulary without merges: every byte, with and without '</w>'."""
    # GPT-2's reversible byte -> printable character table, which CLIP's BPE uses.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def write_tiny_sd15(folder: Path, seed: int = 0, with_unet: bool = False, vae_channels: int = 32) -> Path:
    """A diffusers SD 1.5 folder (vae/, text_encoder/, tokenizer/, and unet/ for training) with tiny random models."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    if with_unet:
        config = {k: v for k, v in published_config("ID_enc", TINY).items() if not k.startswith("_")}
        UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet")
    vae = AutoencoderKL(block_out_channels=[vae_channels] * 4, norm_num_groups=min(32, vae_channels), latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        layers_per_block=1)
    vae.save_pretrained(folder / "vae")
    vocab = _byte_vocab()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=TINY_TEXT_DIM, intermediate_size=64,
                                        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                                        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                                        pad_token_id=vocab["<|endoftext|>"]))
    text.save_pretrained(folder / "text_encoder")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
    }))
    return folder


# --- preprocessing weight files, in their published formats, random -------------------------

def _random_state(shapes: dict[str, list[int]], seed: int, scale: float) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes; BatchNorm statistics kept plausible."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * scale
    return state


def bisenet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the key names and shapes of 79999_iter.pth (listed from the authors' model)."""
    shapes = json.loads((Path(__file__).parent / "data" / "bisenet_79999_iter_keys.json").read_text())
    return _random_state(shapes, seed, 0.1)


def _bn(prefix: str, n: int) -> dict[str, list[int]]:
    return {f"{prefix}.{p}": [n] for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": []}


def libreface_shapes() -> dict[str, list[int]]:
    """LibreFace's AU ResNet-18: torchvision's resnet18 children as `encoder.N`, then the MLP head."""
    shapes = {"encoder.0.weight": [64, 3, 7, 7], **_bn("encoder.1", 64)}
    for index, (cin, cout, stride) in zip((4, 5, 6, 7), ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))):
        for block in (0, 1):
            p = f"encoder.{index}.{block}"
            first_in = cin if block == 0 else cout
            shapes[f"{p}.conv1.weight"] = [cout, first_in, 3, 3]
            shapes.update(_bn(f"{p}.bn1", cout))
            shapes[f"{p}.conv2.weight"] = [cout, cout, 3, 3]
            shapes.update(_bn(f"{p}.bn2", cout))
            if block == 0 and (cin != cout or stride != 1):
                shapes[f"{p}.downsample.0.weight"] = [cout, cin, 1, 1]
                shapes.update(_bn(f"{p}.downsample.1", cout))
    shapes.update({"classifier.0.weight": [128, 512], "classifier.0.bias": [128], **_bn("classifier.2", 128),
                   "classifier.4.weight": [12, 128], "classifier.4.bias": [12]})
    return shapes


def libreface_checkpoint(seed: int = 0) -> dict:
    """What LibreFace's training saves: {'model': state_dict, ...}."""
    return {"model": _random_state(libreface_shapes(), seed, 0.05), "epoch": 3}


def write_face_weights(root: Path, seed: int = 0) -> Path:
    """All preprocessing weight files, random, where the toolkit looks for them."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from magicface_core import assets as weights

    torch.manual_seed(seed)
    files = {
        weights.BISENET: bisenet_state(seed),
        weights.LIBREFACE_AU: libreface_checkpoint(seed),
        weights.S3FD: s3fd().state_dict(),
        weights.FAN_2D: FAN(4).state_dict(),
    }
    for spec, content in files.items():
        path = spec.path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content, path)
    return Path(root)
