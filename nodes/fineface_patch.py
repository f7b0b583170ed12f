"""FineFace's ComfyUI patch: the attn2 AU term that chains with other packs' replacements, the LoRA as
weight diffs on a clone, and the run's AU tokens read from the positive conditioning.

The AU term follows each chunk of the batch through ``transformer_options["cond_or_uncond"]``: the
positive conditioning's AUs for cond chunks, zero AUs (the encoder's bias) for uncond chunks.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..magicface_core import AUVector, SettingsError
from ..magicface_core.fineface import AUEncoder, au_tokens
from ..magicface_core.fineface import weights as ffw
from ..magicface_core.fineface.checks import check_base_width, check_scale
from ..magicface_core.model.checkpoint import check_state

FINEFACE_AU_KEY = "fineface_au"  # the CONDITIONING entry holding absolute AU rows [B, 12] for FineFace
WRAPPER_KEY = "magicface_fineface"


class AUState:
    """The run's AU tokens, shared by every block's patch of one patched MODEL (set before sampling)."""

    def __init__(self, encoder: AUEncoder, scale: float):
        self.encoder, self.scale = encoder, scale
        self.cond = self.uncond = None
        self.set_aus(AUVector.zeros())

    def set_aus(self, aus: AUVector) -> None:
        uncond, cond = au_tokens(self.encoder, aus)
        self.uncond, self.cond = uncond.detach(), cond.detach()

    def tokens(self, cond_or_uncond: list[int], rows: int) -> torch.Tensor:
        """``[len(cond_or_uncond) * rows, 1, W]``: each chunk's token, repeated over its rows."""
        out = []
        for kind in cond_or_uncond:
            token = self.uncond if kind == 1 else self.cond
            out.append(token.expand(rows, -1, -1) if token.shape[0] == 1 else token[:rows])
        return torch.cat(out)


class FineFaceAttention:
    """attn2 replace patch: the attention that was there (another pack's replacement, or ComfyUI's) plus
    ``au_scale * au_to_v(e)``. It keeps what it found and calls it (IPAdapter_plus's chaining), so a
    patch made before ours and one made after ours that chains the same way both keep working."""

    def __init__(self, au_to_v: torch.Tensor, state: AUState, previous=None):
        self.au_to_v, self.state, self.previous = au_to_v, state, previous

    def __call__(self, q, k, v, extra_options):
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options)
        else:
            import comfy.ldm.modules.attention as attention

            out = attention.optimized_attention(q, k, v, extra_options["n_heads"],
                                                attn_precision=extra_options.get("attn_precision"))
        if self.state.scale == 0:
            return out
        chunks = extra_options.get("cond_or_uncond") or [0]
        tokens = self.state.tokens(chunks, out.shape[0] // len(chunks)).to(out.device, out.dtype)
        term = tokens @ self.au_to_v.to(out.device, out.dtype).t()
        return out + self.state.scale * term

    def __deepcopy__(self, memo):  # clones share the weights and the run's AU state
        return FineFaceAttention(self.au_to_v, self.state, copy.deepcopy(self.previous, memo))

    def to(self, device_or_dtype):
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self


def comfy_block_key(comfy_key: str) -> tuple:
    """``input_blocks.1.1.transformer_blocks.0.attn2...`` -> ("input", 1, 0), the attn2 replace key."""
    parts = comfy_key.split(".")
    index = int(parts[parts.index("transformer_blocks") + 1])
    if parts[0] == "middle_block":
        return ("middle", 0, index)
    return ({"input_blocks": "input", "output_blocks": "output"}[parts[0]], int(parts[1]), index)


def context_width(patcher) -> int:
    return int(patcher.model.model_config.unet_config.get("context_dim") or 0)


def _positive_aus(guider) -> AUVector:
    for cond in (getattr(guider, "original_conds", None) or getattr(guider, "conds", {}) or {}).get("positive", []):
        entry = cond.get(FINEFACE_AU_KEY) if isinstance(cond, dict) else None
        if entry is not None:
            return entry if isinstance(entry, AUVector) else AUVector(entry)
    return AUVector.zeros()


def apply_fineface(patcher, fineface_dir, lora_strength: float = 1.0, au_scale: float = 1.0,
                   sd15_variant: bool = False):
    """A clone of ``patcher`` with FineFace's attn2 patches and LoRA; every check runs before loading."""
    import comfy.patcher_extension
    import comfy.utils

    width = context_width(patcher)
    check_base_width(width, sd15_variant, "the MODEL")
    lora_strength = check_scale(lora_strength, "lora_strength", 10.0)
    au_scale = check_scale(au_scale, "au_scale", 10.0)
    folder = Path(fineface_dir)
    attn_file = ffw.file_path(folder, ffw.SD15_ATTN_PROCESSORS if sd15_variant else ffw.ATTN_PROCESSORS)
    enc_file = ffw.file_path(folder, ffw.SD15_AU_ENCODER if sd15_variant else ffw.AU_ENCODER)
    lora_file = None if sd15_variant else ffw.file_path(folder, ffw.LORA)
    to_comfy = comfy.utils.unet_to_diffusers(patcher.model.model_config.unet_config)  # diffusers -> ComfyUI keys
    sd = patcher.model.diffusion_model.state_dict()
    attn = ffw.read(attn_file)
    want = {}
    for dkey, ckey in to_comfy.items():
        if ".attn2.to_v.weight" in dkey:
            for part in ("au_to_k", "au_to_v"):
                want[dkey.replace("to_v.weight", f"processor.{part}.weight")] = (ckey, (sd[ckey].shape[0], width))
    check_state(attn, {k: s for k, (_, s) in want.items()}, str(attn_file), "FineFace's attention weights for this MODEL")
    encoder = AUEncoder.for_width(width)
    ffw.load_au_encoder(encoder, enc_file)
    model = patcher.clone()
    state = AUState(encoder, au_scale)
    replace = model.model_options.setdefault("transformer_options", {}).setdefault("patches_replace", {}).get("attn2", {})
    for dkey, (ckey, _) in want.items():
        if dkey.endswith("au_to_v.weight"):
            key = comfy_block_key(ckey)
            model.set_model_attn2_replace(FineFaceAttention(attn[dkey], state, replace.get(key, replace.get(key[:2]))), *key)
    if lora_file is not None:
        model.add_patches(lora_patches(lora_file, to_comfy, sd, lora_strength), 1.0)

    def outer_sample(executor, noise, *args, **kwargs):  # the positive conditioning's AUs for this run
        aus = _positive_aus(executor.class_obj)
        check_au_rows(aus, noise.shape[0])
        state.set_aus(aus)
        return executor(noise, *args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample)
    return model


def check_au_rows(aus: AUVector, batch: int) -> None:
    """One row of AUs for the whole batch, or one per latent (before the first step)."""
    if len(aus) not in (1, batch):
        raise SettingsError(
            f"the positive conditioning holds {len(aus)} rows of FineFace AUs but the latent batch has "
            f"{batch}: set the latent's batch size (Empty Latent Image's batch_size) to {len(aus)}, or give "
            "one row of AUs")


def lora_patches(path, to_comfy: dict, sd: dict, lora_strength: float) -> dict:
    """``{"diffusion_model.<ComfyUI key>": (scale * B @ A,)}`` weight diffs for ``add_patches``."""

    class _Linear:  # the LoRA reader checks shapes against these
        def __init__(self, shape):
            self.out_features, self.in_features = shape

    linears = {dkey[: -len(".weight")]: _Linear(sd[ckey].shape[:2]) for dkey, ckey in to_comfy.items()
               if dkey.endswith(tuple(f".{t}.weight" for t in ffw.LORA_TARGETS)) and (".attn1." in dkey or ".attn2." in dkey)}
    state, rank = ffw.read_lora(path, linears)
    if lora_strength == 0:
        return {}
    return {f"diffusion_model.{to_comfy[name + '.weight']}": (delta,)
            for name, delta in ffw.lora_deltas(state, rank, lora_strength).items()}
