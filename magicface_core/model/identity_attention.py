"""Identity injection: record the ID encoder's block inputs, append them to the denoiser's self-attention.

The paper's rule, per transformer block n: ``x' = (cat[x, id_n] + attn1(norm1(cat[x, id_n])))[:, :N]``.
LayerNorm acts per token, so ``norm1(cat[x, id]) = cat[norm1(x), norm1(id)]``, and only the
first N outputs are kept, so only the N denoising tokens need queries. The ID tokens enter as
extra keys and values, ``to_k(norm1(id_n))`` and ``to_v(norm1(id_n))``, which are the same at
every step and for both guidance branches. :func:`attend_with_identity` is the one kernel and
:class:`BlockIdentity` the one caching rule, used by the diffusers processor here and by the
ComfyUI ``attn1`` patch alike (``nodes/comfy_model.py``, with ComfyUI's attention). Each diffusers
denoiser call passes its identity to the processors as its own argument (never stored on the shared
processors). The block's own residual and the rest of the stock block stay untouched.
"""

from __future__ import annotations

import contextvars
import copy
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import CheckpointError


@dataclass(frozen=True)
class IdentityFeatures:
    """What the ID encoder produced for a batch of identities.

    ``tokens[n]`` is the input of the encoder's n-th transformer block (forward order),
    shape ``[B, tokens, channels]``; it feeds the denoiser's n-th block.
    """

    tokens: tuple[torch.Tensor, ...]

    @property
    def batch_size(self) -> int:
        return self.tokens[0].shape[0]

    def to(self, device=None, dtype=None) -> "IdentityFeatures":
        return IdentityFeatures(tuple(t.to(device=device, dtype=dtype) for t in self.tokens))

    def select(self, index: int | slice) -> "IdentityFeatures":
        index = slice(index, index + 1) if isinstance(index, int) else index
        return IdentityFeatures(tuple(t[index] for t in self.tokens))


def transformer_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's transformer blocks in forward order.

    ``unet.modules()`` is registration order, which puts ``up_blocks`` before ``mid_block``;
    the forward pass visits down blocks, then the mid block, then up blocks.
    """
    from diffusers.models.attention import BasicTransformerBlock

    stages = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return [m for stage in stages if stage is not None for m in stage.modules() if isinstance(m, BasicTransformerBlock)]


class _RecordingComplete(Exception):
    """Raised from the last block's hook: everything after it does not affect the features."""


@dataclass
class _Recording:
    recorder: "IdentityRecorder"
    tokens: list


# The recording in progress in this thread (or task): per call, never on the shared hooks, so two
# threads encoding on one model, or an encode nested in a callback, each see only their own.
_RECORDING: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar("magicface_recording", default=None)


class IdentityRecorder:
    """Hooks on the ID encoder that record each transformer block's input hidden states."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.blocks = transformer_blocks(unet)
        if not self.blocks:
            raise CheckpointError("the ID encoder has no transformer blocks to take identity features from")
        self._handles = [
            block.register_forward_pre_hook(partial(self._record, i), with_kwargs=True)
            for i, block in enumerate(self.blocks)
        ]

    def _record(self, index: int, module, args, kwargs):
        recording = _RECORDING.get()
        if recording is None or recording.recorder is not self:  # e.g. a gradient-checkpoint recompute
            return None
        recording.tokens[index] = args[0] if args else kwargs["hidden_states"]
        if index == len(self.blocks) - 1:
            raise _RecordingComplete
        return None

    def record(self, run: Callable[[], object]) -> IdentityFeatures:
        """Call ``run`` (a forward pass of the encoder) and return the recorded block inputs.

        The pass ends at the last block's input, skipping work whose output is unused.
        """
        recording = _Recording(self, [None] * len(self.blocks))
        token = _RECORDING.set(recording)
        try:
            run()
        except _RecordingComplete:
            pass
        finally:
            _RECORDING.reset(token)
        if any(t is None for t in recording.tokens):
            raise RuntimeError("the ID encoder's forward pass skipped some transformer blocks")
        return IdentityFeatures(tuple(recording.tokens))

    def unused_modules(self) -> list[str]:
        """Names of the encoder's modules with weights that do not reach the recorded features:
        the last transformer block and everything after it (found by tracing one small pass)."""
        started: set[str] = set()
        owners = [(name, m) for name, m in self.unet.named_modules() if any(True for _ in m.parameters(recurse=False))]
        handles = [m.register_forward_pre_hook(lambda *_, name=name: started.add(name)) for name, m in owners]
        config = self.unet.config
        size = 2 ** len(config.block_out_channels)  # 2x2 at the deepest level
        weight = next(self.unet.parameters())
        sample = torch.zeros(1, config.in_channels, size, size, device=weight.device, dtype=weight.dtype)
        text = torch.zeros(1, 1, config.cross_attention_dim, device=weight.device, dtype=weight.dtype)
        try:
            with torch.no_grad():
                self.record(lambda: self.unet(sample, 0, encoder_hidden_states=text))
        finally:
            for handle in handles:
                handle.remove()
        return [name for name, _ in owners if name not in started]

    def trunk(self) -> torch.nn.Module:
        """The encoder without :meth:`unused_modules`, for training: every other module and weight is
        shared with the full encoder, which keeps the unused ones as they were (for saving)."""
        return _without(self.unet, set(self.unused_modules()))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class _Removed(torch.nn.Module):
    """Stands in for a module that a training forward never reaches."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("this part of the ID encoder is not part of the training module")


def _without(module: torch.nn.Module, removed: set[str], prefix: str = "") -> torch.nn.Module:
    """A copy of the module tree down to the removed modules; everything else is the same objects.
    Copied modules share their hooks (the recorder's) and parameters with the originals."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    for name, child in module._modules.items():
        path = prefix + name
        if path in removed:
            clone._modules[name] = _Removed()
        elif child is not None and any(r.startswith(path + ".") for r in removed):
            clone._modules[name] = _without(child, removed, path + ".")
    return clone


# The keyword under which the denoiser's attention processors receive the identity of one call
# (UNet2DConditionModel passes ``cross_attention_kwargs`` on to every attention processor).
IDENTITY_KWARG = "identity"

# ``attention(q, k, v, heads) -> out``, each ``[B, tokens, heads * head_dim]``: the host's attention
# (scaled dot product here, ComfyUI's optimized attention in its UNet).
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, width = q.shape
    split = [t.view(batch, t.shape[1], heads, width // heads).transpose(1, 2) for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*split, attn_mask=None, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, tokens, width).to(q.dtype)


class BlockIdentity:
    """One transformer block's identity keys and values ``to_k(norm1(id))``, ``to_v(norm1(id))``
    (``[B_id, M, C]``), made with that block's own modules.

    The caching rule, for every host: computed once per placement of the block's weights
    (device, dtype, the weight tensors themselves: a LoRA or an offload sets new ones) and reused
    at every step and by both guidance branches; recomputed on every call while autograd records
    (training), so gradients reach the weights and a gradient-checkpoint recompute sees the same work.
    """

    def __init__(self, tokens: torch.Tensor, norm: torch.nn.Module, to_k: torch.nn.Module, to_v: torch.nn.Module):
        self.tokens, self.norm, self.to_k, self.to_v = tokens, norm, to_k, to_v
        self._kv = None
        self._key = None

    def kv(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values on ``like``'s device and dtype."""
        # No version counter: ComfyUI loads under inference mode, whose tensors have none.
        key = (like.device, like.dtype, *((id(w), w.data_ptr()) for w in (self.to_k.weight, self.to_v.weight)))
        if self._key == key and not torch.is_grad_enabled():
            return self._kv
        normed = self.norm(self.tokens.to(like.device, like.dtype))
        kv = (self.to_k(normed), self.to_v(normed))
        if not torch.is_grad_enabled():
            self._kv, self._key = kv, key
        return kv


def attend_with_identity(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, identity: BlockIdentity, heads: int,
                         attention: Attention = sdpa_attention) -> torch.Tensor:
    """The identity kernel: self-attention of the N denoising tokens over ``[their keys, the ID keys]``
    (``q, k, v``: ``[B, N, C]``, projected; the ID rows broadcast by the batch rule)."""
    id_k, id_v = identity.kv(q)
    batch = q.shape[0]
    return attention(q, torch.cat([k, _broadcast_batch(id_k, batch)], dim=1),
                     torch.cat([v, _broadcast_batch(id_v, batch)], dim=1), heads)


@dataclass(frozen=True)
class IdentityKV:
    """Each denoiser block's :class:`BlockIdentity` for one call (or one MODEL)."""

    blocks: tuple[BlockIdentity, ...]


class IdentityAttnProcessor:
    """Self-attention whose keys and values are extended with the call's identity keys/values.

    It holds no identity itself: each call brings its own (``cross_attention_kwargs``), so
    concurrent and nested calls on one model cannot see each other's identity.
    """

    def __init__(self, index: int) -> None:
        self.index = index  # which transformer block's entry of :class:`IdentityKV` is ours

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, identity: IdentityKV | None = None) -> torch.Tensor:
        if identity is None:
            raise RuntimeError("the denoising UNet was called without identity features bound; use MagicFace.sample")
        out = attend_with_identity(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states),
                                   identity.blocks[self.index], attn.heads)
        return attn.to_out[1](attn.to_out[0](out))


class _IgnoresIdentity:
    """Wraps a cross-attention processor so that it accepts (and ignores) the identity keyword,
    instead of diffusers warning on every call that the keyword is not expected."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 identity: IdentityKV | None = None):
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def _broadcast_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:])
    if batch % t.shape[0] == 0:  # guidance doubles the batch: [cond rows, uncond rows]
        return t.repeat(batch // t.shape[0], *([1] * (t.ndim - 1)))
    raise ValueError(f"cannot broadcast identity features of batch {t.shape[0]} to {batch}")


class IdentityInjection:
    """Installs :class:`IdentityAttnProcessor` on every self-attention of the denoising UNet."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.blocks = transformer_blocks(unet)
        self.processors = []
        for index, block in enumerate(self.blocks):
            _check_supported(block, index)
            processor = IdentityAttnProcessor(index)
            block.attn1.set_processor(processor)
            if block.attn2 is not None and not isinstance(block.attn2.processor, _IgnoresIdentity):
                block.attn2.set_processor(_IgnoresIdentity(block.attn2.processor))
            self.processors.append(processor)

    def identity_kv(self, features: IdentityFeatures) -> IdentityKV:
        """Each block's identity keys and values (made on first use, see :class:`BlockIdentity`)."""
        check_block_count(len(features.tokens), len(self.blocks))
        return IdentityKV(tuple(BlockIdentity(tokens, block.norm1, block.attn1.to_k, block.attn1.to_v)
                                for block, tokens in zip(self.blocks, features.tokens)))

    def call_kwargs(self, features: IdentityFeatures | IdentityKV) -> dict:
        """Keyword arguments of one denoiser call that bind ``features`` for that call only."""
        kv = features if isinstance(features, IdentityKV) else self.identity_kv(features)
        return {"cross_attention_kwargs": {IDENTITY_KWARG: kv}}


def check_block_count(features: int, blocks: int) -> None:
    if features != blocks:
        raise CheckpointError(
            f"the ID encoder gave {features} features but the denoising UNet has "
            f"{blocks} transformer blocks: the two UNets do not belong together"
        )


def _check_supported(block, index: int) -> None:
    attn = block.attn1
    unsupported = [
        name
        for name, bad in (
            ("norm_type", block.norm_type != "layer_norm"),
            ("pos_embed", block.pos_embed is not None),
            ("only_cross_attention", block.only_cross_attention),
            ("group_norm", attn.group_norm is not None),
            ("spatial_norm", attn.spatial_norm is not None),
            ("norm_q/norm_k", attn.norm_q is not None or attn.norm_k is not None),
            ("residual_connection", attn.residual_connection),
            ("rescale_output_factor", attn.rescale_output_factor != 1.0),
        )
        if bad
    ]
    if unsupported:
        raise CheckpointError(
            f"transformer block {index} of the denoising UNet uses {', '.join(unsupported)}, "
            "which MagicFace's identity attention does not support (it expects SD 1.5-style blocks)"
        )
