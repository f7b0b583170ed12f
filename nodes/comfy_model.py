"""MagicFace inside ComfyUI's own UNet: a MODEL for KSampler and SamplerCustomAdvanced.

Imported only inside ComfyUI (through :mod:`.host`). The mapping:

* the denoiser is ComfyUI's InstructPix2Pix SD 1.5 model (8 input channels, the 4 extra taking
  the condition image's *unscaled* VAE latent, ``concat_latent_image``), whose ``label_emb`` is
  MagicFace's AU projection: one Linear added to the time embedding, fed from ``y``, which
  :meth:`MagicFaceDenoiser.encode_adm` takes from the conditioning's ``magicface_au``;
* the ID encoder is ComfyUI's SD 1.5 UNet, run once on the identity latent at t=0 while forward
  pre-hooks record each transformer block's input (the pass stops after the last block);
* identity enters every self-attention through an ``attn1`` replace patch running the core's kernel
  (:func:`~magicface_core.model.identity_attention.attend_with_identity`): the ID keys and values
  ``to_k(norm1(id))``, ``to_v(norm1(id))`` are appended, made with the denoiser's own (possibly
  patched) weights under the core's caching rule; the patch chains with other packs' attn1 patches.

The weights are the loaded MagicFace model's own tensors (no copy); ComfyUI's ModelPatcher
then moves, partially loads or offloads them like any checkpoint's UNet.
"""

from __future__ import annotations

import copy
from functools import partial

import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialTransformer

from ..magicface_core.au import NUM_AUS
from ..magicface_core.errors import CheckpointError
from ..magicface_core.model.identity_attention import (BlockIdentity, IdentityFeatures, attend_with_identity,
                                                        check_block_count)
from ..magicface_core.model.magicface import ID_ENCODER_TIMESTEP
from .types import AU_KEY


def unet_config(diffusers_config, in_channels: int, au_dim: int | None) -> dict:
    """ComfyUI's UNetModel settings for a diffusers SD 1.5-style UNet2DConditionModel config."""
    c = diffusers_config
    widths = list(c["block_out_channels"])
    layers = c["layers_per_block"]
    if not isinstance(layers, int) or c.get("transformer_layers_per_block", 1) != 1:
        raise CheckpointError("ComfyUI's MODEL form supports SD 1.5-style UNets only (1 transformer layer, "
                              "the same number of resnets in every block)")
    depth = [1 if kind.startswith("CrossAttn") else 0 for kind in c["down_block_types"]]
    if [1 if kind.startswith("CrossAttn") else 0 for kind in reversed(c["up_block_types"])] != depth:
        raise CheckpointError("the UNet's up blocks do not mirror its down blocks")
    heads = c.get("num_attention_heads") or c["attention_head_dim"]  # diffusers' SD 1.5 config names heads so
    config = {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "in_channels": in_channels, "out_channels": c["out_channels"], "model_channels": widths[0],
        "channel_mult": [w // widths[0] for w in widths], "num_res_blocks": [layers] * len(widths),
        "transformer_depth": sum(([d] * layers for d in depth), []),
        "transformer_depth_output": sum(([d] * (layers + 1) for d in depth), []),
        "transformer_depth_middle": 1, "context_dim": c["cross_attention_dim"],
        "use_linear_in_transformer": bool(c["use_linear_projection"]), "use_temporal_attention": False,
        "use_temporal_resblock": False, "adm_in_channels": au_dim, "num_classes": "sequential" if au_dim else None,
    }
    return config, heads


class MagicFaceDenoiser(comfy.model_base.SD15_instructpix2pix):
    """InstructPix2Pix SD 1.5 (unscaled concat latent) whose ``y`` is the AU vector."""

    def __init__(self, model_config, device=None):
        super().__init__(model_config, device=device)
        unet = self.diffusion_model
        linear = type(unet.time_embed[0])  # ComfyUI's operations class for this dtype
        time_dim = unet.time_embed[0].out_features
        # MagicFace's AU projection is one Linear (diffusers' simple_projection), not ComfyUI's Linear-SiLU-Linear.
        unet.label_emb = torch.nn.Sequential(linear(self.adm_channels, time_dim, dtype=unet.dtype, device=device))

    def encode_adm(self, **kwargs):
        noise = kwargs["noise"]
        au = kwargs.get(AU_KEY)
        if au is None:  # a conditioning without AUs (e.g. from another node) means "no change"
            au = torch.zeros(1, self.adm_channels)
        return comfy.utils.resize_to_batch_size(au, noise.shape[0])


def build_patcher(unet: torch.nn.Module, denoiser: bool, load_device, offload_device):
    """A ModelPatcher over ComfyUI's UNet holding ``unet``'s (a diffusers UNet2DConditionModel) tensors."""
    config, heads = unet_config(unet.config, unet.config["in_channels"], NUM_AUS if denoiser else None)
    model_config = (comfy.supported_models.SD15_instructpix2pix if denoiser else comfy.supported_models.SD15)(config)
    model_config.unet_config["num_heads"] = heads  # the class's defaults set SD 1.5's 8
    dtype = unet.conv_in.weight.dtype
    model_config.set_inference_dtype(dtype, None)
    meta = torch.device("meta")  # built without memory: the tensors are assigned below
    model = MagicFaceDenoiser(model_config, device=meta) if denoiser else comfy.model_base.BaseModel(model_config, device=meta)
    mapping = comfy.utils.unet_to_diffusers(model_config.unet_config)
    mapping["class_embedding.weight"] = "label_emb.0.weight"
    mapping["class_embedding.bias"] = "label_emb.0.bias"
    source = unet.state_dict()
    unmapped = [k for k in source if k not in mapping]
    if unmapped:
        raise CheckpointError(f"no place in ComfyUI's UNet for {', '.join(unmapped[:5])}")
    state = {mapping[k]: v for k, v in source.items()}
    model.diffusion_model.requires_grad_(False)  # inference only; and the loaded tensors may be inference tensors
    missing, unexpected = model.diffusion_model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(f"ComfyUI's UNet does not match MagicFace's: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.device = offload_device
    model.model_sampling.to(offload_device)
    return patcher_class()(model, load_device=load_device, offload_device=offload_device)


def patcher_class():
    """The patcher ComfyUI's own checkpoint loader builds UNets with: ``CoreModelPatcher`` where the
    version has it (its main.py points it at ModelPatcherDynamic when dynamic VRAM works), else
    ``ModelPatcher``. Looked up at each call, as ComfyUI's loader does, since main.py rebinds it."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def denoiser_for(patcher):
    """The core sampler's denoiser (:data:`magicface_core.model.magicface.DenoiserFor`) as ComfyUI's
    UNet under ``patcher``: the identity patched in as for the MODEL path, the weights placed by
    ComfyUI's memory management (partial or dynamic loading included)."""

    def with_features(features: IdentityFeatures):
        model = with_identity(patcher, features)
        comfy.model_management.load_models_gpu([model])
        unet = model.model.diffusion_model
        options = model.model_options["transformer_options"]

        def denoise(x, t, text, au):
            timesteps = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
            return unet(x, timesteps, context=text, y=au, transformer_options=dict(options))

        return denoise

    return with_features


def transformer_blocks(patcher) -> list[tuple[tuple, BasicTransformerBlock]]:
    """((block name, block id, index), block) for every transformer block, in forward order
    (the keys ComfyUI's ``attn1`` replace patches use)."""
    unet = patcher.model.diffusion_model
    stages = [("input", list(unet.input_blocks)), ("middle", [unet.middle_block]), ("output", list(unet.output_blocks))]
    found = []
    for name, modules in stages:
        for block_id, module in enumerate(modules):
            for layer in module:
                if isinstance(layer, SpatialTransformer):
                    found.extend(((name, block_id, i), b) for i, b in enumerate(layer.transformer_blocks))
    return found


class _Recorded(Exception):
    pass


@torch.no_grad()
def encode_identity(patcher, id_latents: torch.Tensor, text: torch.Tensor) -> IdentityFeatures:
    """The ID encoder's transformer-block inputs for unscaled identity latents (one pass, t=0)."""
    comfy.model_management.load_models_gpu([patcher])
    model = patcher.model
    device, dtype = patcher.load_device, model.get_dtype()
    blocks = [b for _, b in transformer_blocks(patcher)]
    tokens: list = [None] * len(blocks)

    def record(index, module, args, kwargs):
        tokens[index] = args[0] if args else kwargs["x"]
        if index == len(blocks) - 1:
            raise _Recorded

    handles = [b.register_forward_pre_hook(lambda m, a, k, i=i: record(i, m, a, k), with_kwargs=True)
               for i, b in enumerate(blocks)]
    batch = max(id_latents.shape[0], text.shape[0])
    try:
        model.diffusion_model(
            id_latents.to(device, dtype).expand(batch, -1, -1, -1),
            torch.full((batch,), float(ID_ENCODER_TIMESTEP), device=device),
            context=text.to(device, dtype).expand(batch, -1, -1), transformer_options={},
        )
    except _Recorded:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return IdentityFeatures(tuple(tokens))


class IdentityAttention:
    """``attn1`` replace patch of one denoiser block: the core's identity kernel with ComfyUI's attention.

    It stacks: a replacement another pack made at this block before ours is kept and called with the
    extended keys and values (so both take effect); one made after ours that chains the same way
    (IPAdapter_plus's ``Attn2Replace`` pattern: keep what was there, call it) calls ours.
    """

    def __init__(self, identity: BlockIdentity, previous=None):
        self.identity = identity
        self.previous = previous  # the replacement that was at this block, or None

    def __call__(self, q, k, v, extra_options):
        return attend_with_identity(q, k, v, self.identity, extra_options["n_heads"],
                                    partial(self._attention, extra_options))

    def _attention(self, extra_options, q, k, v, heads):
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"))

    # ModelPatcher.clone deep-copies model options: the identity (the block's modules, the cache) is shared.
    def __deepcopy__(self, memo):
        return IdentityAttention(self.identity, copy.deepcopy(self.previous, memo))

    # ModelPatcher moves replace patches with the model; ours holds no weights, what it wraps may.
    def to(self, device_or_dtype):
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self


def _attn1_replacement(patcher, key: tuple):
    """The attn1 replacement ComfyUI would run at ``key`` (it looks up (name, id, index), then (name, id))."""
    replace = patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    return replace.get(key, replace.get(key[:2]))


def with_identity(patcher, features: IdentityFeatures):
    """A clone of the denoiser's ModelPatcher whose self-attentions see ``features``."""
    blocks = transformer_blocks(patcher)
    check_block_count(len(features.tokens), len(blocks))
    model = patcher.clone()
    for (key, block), tokens in zip(blocks, features.tokens):
        identity = BlockIdentity(tokens, block.norm1, block.attn1.to_k, block.attn1.to_v)
        model.set_model_attn1_replace(IdentityAttention(identity, _attn1_replacement(model, key)), *key)
    return model
