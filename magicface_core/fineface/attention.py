"""FineFace's cross-attention term.

The authors add ``au_scale * Attn(Q, au_to_k(e), au_to_v(e))`` to the text attention before
``to_out``. With a single AU token the softmax over one key is exactly 1, so that term is
``au_scale * au_to_v(e)`` at every query position: no scores are computed (tests check it equals
the full formula).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def au_term(au_to_v: nn.Module, token: torch.Tensor, scale: float) -> torch.Tensor:
    """``[B, 1, C]``: the AU attention's output, broadcast over positions when added."""
    return au_to_v(token.to(au_to_v.weight.dtype)) * scale


def full_au_attention(query: torch.Tensor, au_to_k: nn.Module, au_to_v: nn.Module, token: torch.Tensor,
                      heads: int) -> torch.Tensor:
    """The authors' formula, for tests: multi-head ``softmax(Q K^T / sqrt(d)) V`` over the AU token(s)."""
    b, n, c = query.shape
    k, v = au_to_k(token), au_to_v(token)
    split = lambda x: x.reshape(b, -1, heads, c // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(query), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n, c)


class FineFaceAttnProcessor(nn.Module):
    """A diffusers attn2 processor: ``Attn(Q, K_text, V_text) + au_scale * au_to_v(e)`` before ``to_out``.

    It is an ``nn.Module`` so its weights sit in the UNet's state dict as
    ``<block>.attn2.processor.au_to_{k,v}.weight``, the keys of ``attn_processors.ckpt``.
    ``au_embedding``/``au_scale`` come through ``cross_attention_kwargs`` as in the authors' pipeline.
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int):
        super().__init__()
        self.au_to_k = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.au_to_v = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 au_embedding=None, au_scale: float = 1.0, **_):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            length = (encoder_hidden_states if encoder_hidden_states is not None else hidden_states).shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        split = lambda x: x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # noqa: E731
        hidden_states = F.scaled_dot_product_attention(split(query), split(key), split(value),
                                                       attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        if au_embedding is not None and au_scale != 0:
            hidden_states = hidden_states + au_term(self.au_to_v, au_embedding, au_scale).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attn2_sizes(unet) -> dict[str, tuple[int, int]]:
    """``{processor name: (hidden size, cross-attention width)}`` for every attn2 of a diffusers UNet."""
    sizes = {}
    for name, module in unet.named_modules():
        if name.endswith("attn2") and hasattr(module, "to_k"):
            sizes[name + ".processor"] = (module.to_q.out_features, module.to_k.in_features)
    return sizes


def install_processors(unet) -> None:
    """FineFace's processor on every attn2, diffusers' plain one elsewhere (as the authors do)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    class PlainProcessor(AttnProcessor2_0):
        # attn1 takes the AU kwargs too (unused), so diffusers does not warn at every call
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     au_embedding=None, au_scale=1.0):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    sizes = attn2_sizes(unet)
    unet.set_attn_processor({name: FineFaceAttnProcessor(*sizes[name]) if name in sizes else PlainProcessor()
                             for name in unet.attn_processors})
