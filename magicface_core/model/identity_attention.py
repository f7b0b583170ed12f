"""Identity injection: record the ID encoder's block inputs, append them to the denoiser's self-attention.

The paper's rule, per transformer block n: ``x' = (cat[x, id_n] + attn1(norm1(cat[x, id_n])))[:, :N]``.
LayerNorm acts per token, so ``norm1(cat[x, id]) = cat[norm1(x), norm1(id)]``, and only the
first N outputs are kept, so only the N denoising tokens need queries. The ID tokens enter as
extra keys and values, ``to_k(norm1(id_n))`` and ``to_v(norm1(id_n))``, which are the same at
every step and for both guidance branches: :meth:`IdentityInjection.bind` computes them once
per edit. The block's own residual and the rest of the stock block stay untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

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


class IdentityRecorder:
    """Hooks on the ID encoder that record each transformer block's input hidden states."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.blocks = transformer_blocks(unet)
        if not self.blocks:
            raise CheckpointError("the ID encoder has no transformer blocks to take identity features from")
        self._tokens: list[torch.Tensor | None] | None = None
        self._stop_early = True
        self._handles = [
            block.register_forward_pre_hook(partial(self._record, i), with_kwargs=True)
            for i, block in enumerate(self.blocks)
        ]

    def _record(self, index: int, module, args, kwargs):
        if self._tokens is None:  # not recording (e.g. a gradient-checkpoint recompute)
            return None
        self._tokens[index] = args[0] if args else kwargs["hidden_states"]
        if self._stop_early and index == len(self.blocks) - 1:
            raise _RecordingComplete
        return None

    def record(self, run: Callable[[], object], stop_early: bool = True) -> IdentityFeatures:
        """Call ``run`` (a forward pass of the encoder) and return the recorded block inputs.

        With ``stop_early`` the pass ends at the last block's input, skipping work whose output is
        unused; training passes False, because a DistributedDataParallel forward must run to its end.
        """
        self._tokens = [None] * len(self.blocks)
        self._stop_early = stop_early
        try:
            run()
        except _RecordingComplete:
            pass
        finally:
            tokens, self._tokens = self._tokens, None
        if any(t is None for t in tokens):
            raise RuntimeError("the ID encoder's forward pass skipped some transformer blocks")
        return IdentityFeatures(tuple(tokens))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class IdentityAttnProcessor:
    """Self-attention whose keys and values are extended with precomputed identity keys/values."""

    def __init__(self) -> None:
        self.id_key: torch.Tensor | None = None  # [B_id, heads, M, head_dim]
        self.id_value: torch.Tensor | None = None

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if self.id_key is None:
            raise RuntimeError("the denoising UNet was called without identity features bound; use MagicFace.sample")
        batch, tokens, _ = hidden_states.shape
        heads = attn.heads
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = query.shape[-1] // heads
        query, key, value = (t.view(batch, tokens, heads, head_dim).transpose(1, 2) for t in (query, key, value))
        key = torch.cat([key, _broadcast_batch(self.id_key, batch)], dim=2)
        value = torch.cat([value, _broadcast_batch(self.id_value, batch)], dim=2)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, tokens, heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


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
            processor = IdentityAttnProcessor()
            block.attn1.set_processor(processor)
            self.processors.append(processor)

    def identity_kv(self, features: IdentityFeatures) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's identity keys and values, ``[B, heads, M, head_dim]``."""
        if len(features.tokens) != len(self.blocks):
            raise CheckpointError(
                f"the ID encoder gave {len(features.tokens)} features but the denoising UNet has "
                f"{len(self.blocks)} transformer blocks: the two UNets do not belong together"
            )
        kv = []
        for block, tokens in zip(self.blocks, features.tokens):
            attn = block.attn1
            tokens = tokens.to(device=attn.to_k.weight.device, dtype=attn.to_k.weight.dtype)
            normed = block.norm1(tokens)
            batch, count, _ = normed.shape
            key, value = attn.to_k(normed), attn.to_v(normed)
            head_dim = key.shape[-1] // attn.heads
            kv.append(tuple(t.view(batch, count, attn.heads, head_dim).transpose(1, 2) for t in (key, value)))
        return kv

    @contextlib.contextmanager
    def bind(self, features: IdentityFeatures) -> Iterator[None]:
        """Within the block, the denoiser's self-attention sees ``features``."""
        for processor, (key, value) in zip(self.processors, self.identity_kv(features)):
            processor.id_key, processor.id_value = key, value
        try:
            yield
        finally:
            for processor in self.processors:
                processor.id_key = processor.id_value = None


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
