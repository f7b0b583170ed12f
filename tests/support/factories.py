"""Small random checkpoints in the exact published formats, built by the tests themselves.

These write files the way the authors' release is laid out (diffusers folders whose configs
name the authors' classes, ``au_aug_mlp.*`` keys in the denoiser) without going through the
code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def write_tiny_sd15(folder: Path, seed: int = 0, with_unet: bool = False, vae_channels: int = 32,
                    text_dim: int = TINY_TEXT_DIM) -> Path:
    """A diffusers SD 1.5 folder (vae/, text_encoder/, tokenizer/, and unet/ for training) with tiny random models;
    ``text_dim=1024`` gives SD 2.x's text width."""
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
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=text_dim, intermediate_size=64,
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
    shapes = json.loads((Path(__file__).parents[1] / "data" / "bisenet_79999_iter_keys.json").read_text())
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
    weights.D3DFR.path(root).parent.mkdir(parents=True, exist_ok=True)
    torch.save(d3dfr_state(seed), weights.D3DFR.path(root))
    write_bfm_mat(weights.BFM.path(root), seed=seed)
    return Path(root)


def link_face_weights(source: Path, root: Path) -> Path:
    """Put the files of ``write_face_weights(source)`` under ``root`` as symbolic links, where a models folder
    needs them beside other weights, without another 365 MB copy on disk."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for entry in Path(source).iterdir():
        (root / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return root


def d3dfr_shapes() -> dict[str, list[int]]:
    """d3dfr_res50_nofc.pth: torchvision's resnet50 (no fc) as `backbone.`, eight 1x1 heads as `fianl_layers.N`."""
    shapes = {"backbone.conv1.weight": [64, 3, 7, 7], **_bn("backbone.bn1", 64)}
    cin = 64
    for layer, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for block in range(blocks):
            p = f"backbone.layer{layer}.{block}"
            shapes[f"{p}.conv1.weight"] = [width, cin, 1, 1]
            shapes.update(_bn(f"{p}.bn1", width))
            shapes[f"{p}.conv2.weight"] = [width, width, 3, 3]
            shapes.update(_bn(f"{p}.bn2", width))
            shapes[f"{p}.conv3.weight"] = [4 * width, width, 1, 1]
            shapes.update(_bn(f"{p}.bn3", 4 * width))
            if block == 0:
                shapes[f"{p}.downsample.0.weight"] = [4 * width, cin, 1, 1]
                shapes.update(_bn(f"{p}.downsample.1", 4 * width))
            cin = 4 * width
    for i, n in enumerate((80, 64, 80, 3, 27, 2, 1, 4)):
        shapes[f"fianl_layers.{i}.weight"] = [n, 2048, 1, 1]
        shapes[f"fianl_layers.{i}.bias"] = [n]
    return shapes


# Output scale of each head: coefficients about as large as real fits give (angles ~0.1 rad, |t| < 1).
_D3DFR_HEAD_SCALE = (1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1)


def d3dfr_state(seed: int = 0, module_prefix: bool = False) -> dict[str, torch.Tensor]:
    """Random D3DFR weights: He-scaled convolutions and unit batch norms, so activations stay moderate."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in d3dfr_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) * 0.5 + 0.75
        elif key.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias", "downsample.1.bias")):
            state[key] = torch.randn(shape, generator=generator) * 0.05
        elif key.startswith("fianl_layers"):
            head = int(key.split(".")[1])
            fan_in = 2048
            std = _D3DFR_HEAD_SCALE[head] / fan_in**0.5 * (0.0 if key.endswith("bias") else 1.0)
            state[key] = torch.randn(shape, generator=generator) * std
        elif key.endswith(".weight") and len(shape) == 1:  # batch-norm gains; the last of each block small
            gain = 0.2 if ".bn3." in key else 1.0
            state[key] = 1.0 + (torch.rand(shape, generator=generator) - 0.5) * 0.2 * gain - (1 - gain)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
    if module_prefix:  # files saved from nn.DataParallel
        state = {f"module.{k}": v for k, v in state.items()}
    return state


def write_bfm_mat(path: Path, vertices: int = 400, seed: int = 0, keys: tuple[str, ...] | None = None) -> Path:
    """A random Basel Face Model in BFM_model_front.mat's layout (the keys Face-Adapter's bfm.py reads).

    A face-sized surface (about 2 units wide, as the real model) with small random bases; 1-based
    MATLAB indices in point_buf, tri and keypoints. ``keys`` keeps only those keys.
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    u, v = rng.uniform(-1, 1, vertices), rng.uniform(-1, 1, vertices)
    mean = np.stack([0.8 * u, 1.0 * v, 0.6 * (1 - u**2) * (1 - 0.5 * v**2)], axis=1) + [0.1, 0.2, 0.3]
    triangles = rng.integers(1, vertices + 1, (2 * vertices, 3))
    content = {
        "meanshape": mean.reshape(1, -1).astype(np.float32),
        "idBase": (rng.standard_normal((3 * vertices, 80)) * 0.02).astype(np.float32),
        "exBase": (rng.standard_normal((3 * vertices, 64)) * 0.02).astype(np.float64),
        "meantex": rng.uniform(0, 255, (1, 3 * vertices)).astype(np.float32),
        "texBase": rng.standard_normal((3 * vertices, 80)).astype(np.float32),
        "point_buf": rng.integers(1, 2 * vertices + 1, (vertices, 8)).astype(np.float64),
        "tri": triangles.astype(np.float64),
        "keypoints": (rng.choice(vertices, 68, replace=False) + 1).reshape(1, 68).astype(np.float64),
        "frontmask2_idx": np.arange(1, vertices + 1, dtype=np.float64).reshape(-1, 1),
        "tri_mask2": triangles.astype(np.float64),
        "skinmask": (rng.uniform(size=(1, vertices)) > 0.3).astype(np.float64),
    }
    if keys is not None:
        content = {k: content[k] for k in keys}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), content)
    return path
