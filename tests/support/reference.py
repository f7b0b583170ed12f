"""Plain reference computations of MagicFace, written the way the paper and the authors state them.

Nothing here is used by the product. It recomputes everything the naive way: the identity
tokens are concatenated to the hidden states, the whole 2N-token sequence gets queries, keys
and values at every step, the ID encoder runs on the duplicated guidance batch, and the AU
embedding is a separate linear layer added to the time embedding by a hook. The benchmark
uses it as the "authors' way" baseline.
"""

from __future__ import annotations

import math

import torch

SD15_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, prediction_type="epsilon",
)


def plain_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V over the sequence ``x`` itself, with the layer's projections."""
    b, n, _ = x.shape
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    d = q.shape[-1] // attn.heads
    q, k, v = (t.view(b, n, attn.heads, d).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, attn.heads * d)
    return attn.to_out[1](attn.to_out[0](out))


def concat_then_keep_first_half(block, hidden: torch.Tensor, id_tokens: torch.Tensor) -> torch.Tensor:
    """The paper's rule for one block's self-attention, literally."""
    n = hidden.shape[1]
    both = torch.cat([hidden, id_tokens], dim=1)
    both = both + plain_attention(block.attn1, block.norm1(both))
    return both[:, :n]


def sdpa_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """The same attention through torch's fused kernel, as diffusers' default processor computes it."""
    b, n, _ = x.shape
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    d = q.shape[-1] // attn.heads
    q, k, v = (t.view(b, n, attn.heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, attn.heads * d)
    return attn.to_out[1](attn.to_out[0](out))


class NaiveIdentityProcessor:
    """Self-attention over [x, id] with 2N queries; ID keys/values recomputed at every call."""

    def __init__(self, block, attention=plain_attention):
        self.norm1 = block.norm1
        self.attention = attention
        self.id_tokens: torch.Tensor | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        n = hidden_states.shape[1]
        ids = self.id_tokens
        if ids.shape[0] != hidden_states.shape[0]:
            ids = ids.repeat(hidden_states.shape[0] // ids.shape[0], 1, 1)
        both = torch.cat([hidden_states, self.norm1(ids)], dim=1)  # hidden_states is already norm1(x)
        return self.attention(attn, both)[:, :n]


def forward_order(unet, *args, **kwargs) -> list:
    """The UNet's transformer blocks in the order one forward pass calls them."""
    from diffusers.models.attention import BasicTransformerBlock

    order = []
    hooks = [m.register_forward_pre_hook(lambda mod, _args: order.append(mod))
             for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    try:
        with torch.no_grad():
            unet(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return order


class NaiveMagicFace:
    """Both UNets loaded straight from published-format (config, state) pairs, patched naively."""

    def __init__(self, parts: dict, dtype=torch.float32, device="cpu", attention=plain_attention):
        from diffusers import UNet2DConditionModel

        def build(config, state):
            model = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
            model.load_state_dict(state, strict=True)
            return model.to(device, dtype).eval()

        deno_config, deno_state = parts["denoising_unet"]
        deno_state = dict(deno_state)
        au_weight, au_bias = deno_state.pop("au_aug_mlp.weight"), deno_state.pop("au_aug_mlp.bias")
        self.denoiser = build(deno_config, deno_state)
        self.id_encoder = build(*parts["ID_enc"])
        self.au_mlp = torch.nn.Linear(au_weight.shape[1], au_weight.shape[0]).to(device, dtype)
        self.au_mlp.load_state_dict({"weight": au_weight, "bias": au_bias})
        self.au = torch.zeros(1, au_weight.shape[1], device=device, dtype=dtype)
        # The authors add au_aug_mlp(au) to the time embedding, before the blocks.
        self.denoiser.time_embedding.register_forward_hook(lambda mod, args, out: out + self.au_mlp(self.au))

        size = deno_config["sample_size"]
        text = torch.zeros(1, 77, deno_config["cross_attention_dim"], device=device, dtype=dtype)
        self.id_blocks = forward_order(self.id_encoder, torch.zeros(1, 4, size, size, device=device, dtype=dtype),
                                       0, encoder_hidden_states=text)
        self.deno_blocks = forward_order(self.denoiser, torch.zeros(1, 8, size, size, device=device, dtype=dtype),
                                         1, encoder_hidden_states=text)
        for block in self.deno_blocks:
            block.attn1.set_processor(NaiveIdentityProcessor(block, attention))

    def id_features(self, id_latents, text) -> list[torch.Tensor]:
        recorded = []
        hooks = [b.register_forward_pre_hook(lambda mod, args: recorded.append(args[0])) for b in self.id_blocks]
        try:
            self.id_encoder(id_latents, 0, encoder_hidden_states=text)
        finally:
            for h in hooks:
                h.remove()
        return recorded

    @torch.no_grad()
    def sample(self, id_latents, cond_latents, au, text, noise, steps=50, guidance=3.0, scheduler="uni_pc"):
        """The authors' loop: everything duplicated for guidance, [AU rows; zero-AU rows].

        ``scheduler``: "uni_pc" or "ddim" as the authors build them, or any diffusers scheduler."""
        from diffusers import DDIMScheduler, UniPCMultistepScheduler

        if not isinstance(scheduler, str):  # a scheduler built by the caller
            sched = scheduler
        elif scheduler == "uni_pc":
            sched = UniPCMultistepScheduler(**SD15_SCHEDULER, final_sigmas_type="sigma_min")
        else:
            sched = DDIMScheduler(**SD15_SCHEDULER, clip_sample=False, set_alpha_to_one=False)
        dtype, device = self.denoiser.dtype, self.denoiser.device
        b = noise.shape[0]
        sched.set_timesteps(steps, device=device)
        latents = (noise * sched.init_noise_sigma).to(device, dtype)

        def doubled(t):
            t = t.expand(b, *t.shape[1:])
            return torch.cat([t, t]).to(device, dtype)

        text2, id2, cond2 = doubled(text), doubled(id_latents), doubled(cond_latents)
        au = au.expand(b, -1)
        self.au = torch.cat([au, torch.zeros_like(au)]).to(device, dtype)
        for block, feature in zip(self.deno_blocks, self.id_features(id2, text2)):
            block.attn1.processor.id_tokens = feature
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * 2), t)
            eps = self.denoiser(torch.cat([x, cond2], dim=1), t, encoder_hidden_states=text2).sample
            eps_au, eps_zero = eps.chunk(2)
            eps = eps_zero + guidance * (eps_au - eps_zero)
            latents = sched.step(eps, t, latents).prev_sample
        return latents / 0.18215
