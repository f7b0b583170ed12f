"""Reading and writing MagicFace checkpoints, strictly.

Two formats hold the same weights:

* the **published layout** (``mengtingwei/magicface``): a folder with ``denoising_unet/`` and
  ``ID_enc/``, each a diffusers model folder (``config.json`` plus
  ``diffusion_pytorch_model.safetensors``) whose config names the authors' classes;
* our **single file**: one ``.safetensors`` whose keys are ``denoising_unet.<key>`` and
  ``ID_enc.<key>`` and whose metadata holds both configs, in the published form.

Both UNets are stock :class:`diffusers.UNet2DConditionModel`. The denoiser's AU projection
(``au_aug_mlp``, added to the time embedding) is exactly diffusers' ``simple_projection`` class
embedding, so the published ``au_aug_mlp.*`` keys load into ``class_embedding.*``.

Every load is strict: a missing, unexpected or mis-shaped key raises :class:`CheckpointError`
naming it, never a silently re-initialised layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..au import NUM_AUS
from ..errors import CheckpointError
from ..files import atomic_path

DENOISER = "denoising_unet"
ID_ENCODER = "ID_enc"
PART_NAMES = (DENOISER, ID_ENCODER)
AUTHORS_CLASS_NAMES = {DENOISER: "UNetDeno2DConditionModel", ID_ENCODER: "UNetID2DConditionModel"}
EXPECTED_IN_CHANNELS = {DENOISER: 8, ID_ENCODER: 4}

PUBLISHED_AU_PREFIX = "au_aug_mlp."
DIFFUSERS_AU_PREFIX = "class_embedding."

WEIGHT_FILE_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)
SINGLE_FILE_FORMAT = "magicface-1"
_METADATA_FORMAT_KEY = "magicface_format"
# Config keys that our mapping sets; a published config must not carry other values for them.
_AU_EMBED_CONFIG = {"class_embed_type": "simple_projection", "projection_class_embeddings_input_dim": NUM_AUS}


@dataclass
class UNetCheckpoint:
    """One UNet's config (published form) and state dict (published key names)."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    source: str  # where it was read from, for error messages


# --- configs -------------------------------------------------------------------------------

def diffusers_config(part: str, published_config: Mapping, source: str = "") -> dict:
    """The :class:`UNet2DConditionModel` config for a UNet whose config is in the published form."""
    config = {k: v for k, v in published_config.items() if not k.startswith("_")}
    expected = EXPECTED_IN_CHANNELS[part]
    got = config.get("in_channels")
    if got != expected:
        what = "denoising UNet (4 noisy-latent + 4 condition channels)" if part == DENOISER else "ID encoder"
        raise CheckpointError(
            f"{source or part}: in_channels is {got}, but a MagicFace {what} has {expected}. "
            "Is this a MagicFace checkpoint? The published one is mengtingwei/magicface."
        )
    for key, value in _AU_EMBED_CONFIG.items():
        if config.get(key) not in (None, value):
            raise CheckpointError(f"{source or part}: config sets {key}={config[key]!r}, which MagicFace does not use")
    if part == DENOISER:
        config.update(_AU_EMBED_CONFIG)
    return config


def published_config(part: str, model_config: Mapping) -> dict:
    """The published form of a UNet's config (the authors' class name, no class embedding)."""
    config = {k: v for k, v in dict(model_config).items() if not k.startswith("_")}
    for key in _AU_EMBED_CONFIG:
        config[key] = None
    return {"_class_name": AUTHORS_CLASS_NAMES[part], **config}


# --- key names -----------------------------------------------------------------------------

def to_diffusers_keys(part: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if part != DENOISER:
        return dict(state_dict)
    return {_swap_prefix(k, PUBLISHED_AU_PREFIX, DIFFUSERS_AU_PREFIX): v for k, v in state_dict.items()}


def to_published_keys(part: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if part != DENOISER:
        return dict(state_dict)
    return {_swap_prefix(k, DIFFUSERS_AU_PREFIX, PUBLISHED_AU_PREFIX): v for k, v in state_dict.items()}


def _swap_prefix(key: str, old: str, new: str) -> str:
    return new + key[len(old):] if key.startswith(old) else key


# --- files ---------------------------------------------------------------------------------

def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.bin``/``.pt`` file read without unpickling code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be read as a weights-only PyTorch file ({exc}). "
            "Only plain tensors are loaded from .bin/.pt files; convert other files to safetensors."
        ) from exc
    for wrapper in ("state_dict", "model"):  # training scripts often nest the weights
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
            break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(data)


def is_published_layout(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and all((path / part / "config.json").is_file() for part in PART_NAMES)


def read_published_layout(root: str | os.PathLike) -> dict[str, UNetCheckpoint]:
    root = Path(root)
    absent = [f"{part}/config.json" for part in PART_NAMES if not (root / part / "config.json").is_file()]
    if absent:
        raise CheckpointError(
            f"{root} has no {' or '.join(absent)}: a MagicFace folder holds {DENOISER}/ and {ID_ENCODER}/ "
            "as published at https://huggingface.co/mengtingwei/magicface"
        )
    parts = {}
    for part in PART_NAMES:
        folder = root / part
        config_path = folder / "config.json"
        weights = next((folder / n for n in WEIGHT_FILE_NAMES if (folder / n).is_file()), None)
        if weights is None:
            raise CheckpointError(
                f"{folder} has a config.json but no weights file ({' or '.join(WEIGHT_FILE_NAMES[:1] + WEIGHT_FILE_NAMES[2:3])}); "
                "the download may be incomplete"
            )
        config = _read_json(config_path)
        parts[part] = UNetCheckpoint(config, read_weights_file(weights), str(weights))
    return parts


def read_single_file(path: str | os.PathLike) -> dict[str, UNetCheckpoint]:
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: a single-file MagicFace checkpoint is a .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    if metadata.get(_METADATA_FORMAT_KEY) != SINGLE_FILE_FORMAT:
        raise CheckpointError(
            f"{path} is not a MagicFace checkpoint (its metadata lacks {_METADATA_FORMAT_KEY}={SINGLE_FILE_FORMAT}). "
            "Load the published folder (denoising_unet/ + ID_enc/) or a file written by this pack."
        )
    tensors = read_weights_file(path)
    parts = {}
    for part in PART_NAMES:
        prefix = part + "."
        try:
            config = json.loads(metadata[f"{part}_config"])
        except (KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: metadata has no valid {part}_config") from exc
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        parts[part] = UNetCheckpoint(config, state, f"{path} [{part}]")
    stray = [k for k in tensors if not k.startswith(tuple(p + "." for p in PART_NAMES))]
    if stray:
        raise CheckpointError(f"{path}: unexpected keys outside {DENOISER}/{ID_ENCODER}: {_list(stray)}")
    return parts


def read_checkpoint(path: str | os.PathLike) -> dict[str, UNetCheckpoint]:
    """Both UNets' configs and weights from a published folder or one of our single files."""
    path = Path(path)
    if path.is_dir():
        return read_published_layout(path)
    if path.is_file():
        return read_single_file(path)
    raise CheckpointError(f"{path} does not exist")


def check_writable(path: str | os.PathLike, parts: Mapping[str, UNetCheckpoint]) -> None:
    """Refuse, before a byte is written, weights that are not finite in the precision they go out in
    (an fp32 weight past 65504 becomes inf in fp16): the loader would only call the file damaged."""
    for part in PART_NAMES:
        for key, tensor in parts[part].state_dict.items():
            if not tensor.is_floating_point() or _all_finite(tensor):
                continue
            dtype = str(tensor.dtype).replace("torch.", "")
            cause = (f"it overflows {dtype}, whose largest value is {torch.finfo(tensor.dtype).max:g}; "
                     "write fp32 or bf16 instead (--dtype bf16)") if tensor.dtype != torch.float32 \
                else "it holds NaN or infinite values; the source is damaged"
            raise CheckpointError(f"{path} was not written: the weight {part}.{key} is not finite ({cause})")


def write_single_file(path: str | os.PathLike, parts: Mapping[str, UNetCheckpoint]) -> None:
    from safetensors.torch import save_file

    check_writable(path, parts)
    tensors: dict[str, torch.Tensor] = {}
    metadata = {_METADATA_FORMAT_KEY: SINGLE_FILE_FORMAT}
    for part in PART_NAMES:
        ckpt = parts[part]
        metadata[f"{part}_config"] = json.dumps(ckpt.config)
        for key, value in ckpt.state_dict.items():
            tensors[f"{part}.{key}"] = value.detach().contiguous().cpu()
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def write_published_layout(root: str | os.PathLike, parts: Mapping[str, UNetCheckpoint]) -> None:
    from safetensors.torch import save_file

    check_writable(root, parts)
    for part in PART_NAMES:
        folder = Path(root) / part
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in parts[part].state_dict.items()}
        with atomic_path(folder / WEIGHT_FILE_NAMES[0]) as temporary:
            save_file(tensors, str(temporary), metadata={"format": "pt"})
        with atomic_path(folder / "config.json") as temporary:
            temporary.write_text(json.dumps(parts[part].config, indent=2, sort_keys=True))


# --- building models -----------------------------------------------------------------------

def build_unet(part: str, ckpt: UNetCheckpoint, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu"):
    """A stock UNet2DConditionModel holding exactly the checkpoint's weights."""
    from diffusers import UNet2DConditionModel

    config = diffusers_config(part, ckpt.config, ckpt.source)
    state = to_diffusers_keys(part, ckpt.state_dict)
    # Built on the meta device: no memory or time spent on a random init we would overwrite.
    try:
        with torch.device("meta"):
            model = UNet2DConditionModel.from_config(config)
    except Exception as exc:
        raise CheckpointError(f"{ckpt.source}: the config does not describe a UNet2DConditionModel ({exc})") from exc
    state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    check_finite(state, part, ckpt.source, ckpt.state_dict)
    load_strict(model, state, ckpt.source, f"a MagicFace {part} matching its config",
                key_name=lambda k: _published_name(part, k), assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # a buffer created in __init__ that no checkpoint holds; never expected
        raise CheckpointError(f"{ckpt.source}: no weights for {_list(leftover)}")
    model.to(device)
    model.eval().requires_grad_(False)
    return model


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str,
                key_name: Callable[[str], str] = str, optional: tuple[str, ...] = (),
                assign: bool = False) -> torch.nn.Module:
    """Load ``state`` into ``model`` exactly, or raise :class:`CheckpointError` naming the missing,
    unexpected and mis-shaped keys (shown through ``key_name``). Model keys ending in one of
    ``optional`` may be absent from the file (e.g. ``num_batches_tracked``)."""
    model_state = model.state_dict()
    check_state(state, {k: tuple(v.shape) for k, v in model_state.items()}, source, what, key_name, optional,
                floating={k for k, v in model_state.items() if v.is_floating_point()})
    model.load_state_dict(state, strict=not optional, assign=assign)
    return model


def check_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str, what: str,
                key_name: Callable[[str], str] = str, optional: tuple[str, ...] = (),
                floating: set[str] | None = None) -> None:
    """Raise :class:`CheckpointError` unless ``state`` holds exactly the keys and shapes of ``expected``
    (keys ending in one of ``optional`` may be absent), every key in ``floating`` (default: all)
    being a floating-point tensor. Names are shown through ``key_name``."""
    floating = set(expected) if floating is None else floating
    missing = [k for k in expected if k not in state and not k.endswith(optional or ("\0",))]
    unexpected = [k for k in state if k not in expected]
    not_floating = [f"{key_name(k)} ({str(state[k].dtype).replace('torch.', '')})"
                    for k in floating if k in state and not state[k].is_floating_point()]
    if not_floating:  # an int8/bool tensor would load, then fail with a traceback in the first computation
        raise CheckpointError(
            f"{source} is not {what}: {len(not_floating)} weight(s) are not floating point: {_list(not_floating)}. "
            "The file is damaged or holds quantized weights; use the published fp32/fp16 weights."
        )
    mismatched = [
        f"{key_name(k)} (file {list(state[k].shape)}, model {list(expected[k])})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} key(s): {_list([key_name(k) for k in missing])}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} key(s): {_list([key_name(k) for k in unexpected])}")
        if mismatched:
            problems.append(f"{len(mismatched)} key(s) of the wrong shape: {_list(mismatched)}")
        raise CheckpointError(
            f"{source} is not {what}: " + "; ".join(problems)
            + ". The file is damaged, incomplete, or holds other weights."
        )


def check_finite(state: Mapping[str, torch.Tensor], part: str, source: str,
                 original: Mapping[str, torch.Tensor] | None = None) -> None:
    """Refuse weights holding NaN or infinity (on the load device, where the check is fast): they
    would only show up as a black image after a whole edit."""
    for key, tensor in state.items():
        if not tensor.is_floating_point() or _all_finite(tensor):
            continue
        name = _published_name(part, key)
        stored = (original or {}).get(name)
        if stored is not None and stored.dtype != tensor.dtype and _all_finite(stored):
            raise CheckpointError(
                f"{source}: the weight {name} overflows {str(tensor.dtype).replace('torch.', '')} "
                f"(it is finite in {str(stored.dtype).replace('torch.', '')}); load it in fp32 or bf16"
            )
        raise CheckpointError(
            f"{source}: the weight {name} holds NaN or infinite values. The file is damaged; "
            "download it again (or retrain: the run that wrote it diverged)."
        )


def _all_finite(tensor: torch.Tensor) -> bool:
    # A sum is NaN/inf whenever an element is, and ~30x faster than isfinite().all() on a CPU;
    # only a sum that overflows needs the exact check.
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _published_name(part: str, key: str) -> str:
    return _swap_prefix(key, DIFFUSERS_AU_PREFIX, PUBLISHED_AU_PREFIX) if part == DENOISER else key


def _list(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable JSON config ({exc})") from exc
