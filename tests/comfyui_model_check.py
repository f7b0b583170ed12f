"""MagicFace as a ComfyUI MODEL against the core, inside a real ComfyUI (run with ComfyUI's Python):

    python tests/comfyui_model_check.py COMFYUI_DIR [OUT.json]

Builds a small random MagicFace in the published format, loads it through the pack's loader
node, and measures in float32 on the CPU:

* identity features from ComfyUI's UNet vs the core's ID encoder;
* the MODEL's noise prediction vs the core denoiser's (same latents, timestep, AU, identity,
  condition), at the UNet and through ComfyUI's ``apply_model`` at that timestep's sigma;
* a DDIM edit through ComfyUI's KSampler machinery (``ddim``, ``ddim_uniform``, cfg = AU guidance)
  vs the core's ``ddim`` from the same start.

Prints one JSON object of relative errors (max |a-b| / max |b|).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rel(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def setup(comfyui_dir: str, pytorch_attention: bool = False, pack_dir: Path = REPO):
    """ComfyUI importable (CPU; ``pytorch_attention``: as ``--use-pytorch-cross-attention``), then the
    pack (``pack_dir``, default this repository) imported as ComfyUI does; returns (pack, factories)."""
    sys.path.insert(0, comfyui_dir)
    os.chdir(comfyui_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
    comfy.cli_args.args.use_pytorch_cross_attention = pytorch_attention
    import importlib.util

    spec = importlib.util.spec_from_file_location("comfyui_magicface", Path(pack_dir) / "__init__.py",
                                                  submodule_search_locations=[str(pack_dir)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_magicface"] = pack
    spec.loader.exec_module(pack)
    spec = importlib.util.spec_from_file_location("magicface_test_factories", REPO / "tests" / "support" / "factories.py")
    factories = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factories)
    return pack, factories


def main(comfyui_dir: str, out: str | None = None) -> dict:
    pack, factories = setup(comfyui_dir)
    import torch

    import comfy.sample
    import comfy.samplers

    TINY, random_published_parts, write_published_checkpoint = (
        factories.TINY, factories.random_published_parts, factories.write_published_checkpoint)
    torch.manual_seed(0)
    from comfyui_magicface.magicface_core import AUVector
    from comfyui_magicface.nodes import host

    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    config = {**TINY, "cross_attention_dim": 32}
    write_published_checkpoint(tmp / "magicface", parts=random_published_parts(config, seed=0))
    os.environ["MAGICFACE_MODELS"] = str(tmp)
    from comfyui_magicface.magicface_core import MagicFace
    from comfyui_magicface.nodes.loaded_model import LoadedMagicFace
    import comfy.model_patcher

    # As main.py does where dynamic VRAM works: CoreModelPatcher becomes another class. Our UNets must follow
    # it (on v0.8.0, which has no CoreModelPatcher, they are ComfyUI's checkpoint loader's ModelPatcher).
    has_core = hasattr(comfy.model_patcher, "CoreModelPatcher")
    if has_core:
        class MainPyPatcher(comfy.model_patcher.CoreModelPatcher):
            pass
        original, comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.CoreModelPatcher, MainPyPatcher
    with torch.inference_mode():  # as ComfyUI runs its loader node: the weights are inference tensors
        core = MagicFace.from_pretrained(tmp / "magicface", device="cpu", dtype=torch.float32)
        loaded = LoadedMagicFace.wrap(core, "tiny")
    results = {"patcher_classes": sorted({type(p).__name__ for p in loaded.patchers.values()}),
               "has_core_model_patcher": has_core, "patchers": len(loaded.patchers)}
    if has_core:
        comfy.model_patcher.CoreModelPatcher = original

    g = torch.Generator().manual_seed(1)
    h = w = 16
    id_latents = torch.randn(1, 4, h, w, generator=g)
    cond_latents = torch.randn(1, 4, h, w, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    au = torch.zeros(2, 12)
    au[0, 6], au[1, 0] = 3.0, -2.0  # AU12 up; AU1 down: two edits in one batch

    # 1. identity features
    ours = loaded.encode_identity(id_latents, text)
    theirs = core.encode_identity(id_latents, text)
    results["identity_features"] = max(rel(a, b) for a, b in zip(ours.tokens, theirs.tokens))

    # 2. one noise prediction
    model = pack.NODE_CLASS_MAPPINGS["MagicFaceIdentityModel"].execute(loaded, ours).result[0]
    x = torch.randn(2, 4, h, w, generator=g)
    t = 500
    with torch.no_grad():
        eps_core = core.denoiser(torch.cat([x, cond_latents.expand(2, -1, -1, -1)], 1), t,
                                 encoder_hidden_states=text.expand(2, -1, -1), class_labels=au,
                                 **core.injection.call_kwargs(theirs)).sample
    base = model.model
    options = model.model_options["transformer_options"]
    with torch.no_grad():
        eps_unet = base.diffusion_model(torch.cat([x, cond_latents.expand(2, -1, -1, -1)], 1),
                                        torch.full((2,), float(t)), context=text.expand(2, -1, -1), y=au,
                                        transformer_options=dict(options))
        sigma = base.model_sampling.sigma(torch.tensor([float(t)] * 2))
        x_sigma = x * (sigma ** 2 + 1).sqrt().view(-1, 1, 1, 1)  # ComfyUI's latent at sigma for the VP latent x
        denoised = base.apply_model(x_sigma, sigma, c_concat=cond_latents.expand(2, -1, -1, -1),
                                    c_crossattn=text.expand(2, -1, -1), y=au, transformer_options=dict(options))
        eps_apply = (x_sigma - denoised) / sigma.view(-1, 1, 1, 1)
    results["noise_prediction_unet"] = rel(eps_unet, eps_core)
    results["noise_prediction_apply_model"] = rel(eps_apply, eps_core)

    # 3. a DDIM edit: KSampler's ddim + ddim_uniform vs the core's ddim
    steps, guidance = 10, 3.0
    conditioning = [[text, {}]]
    positive, negative, latent = pack.NODE_CLASS_MAPPINGS["MagicFaceEditConditioning"].execute(
        conditioning, torch.zeros(1, 8 * h, 8 * w, 3), _LatentVAE(cond_latents), AUVector(au)).result
    noise = torch.randn(2, 4, h, w, generator=g)
    sigmas = comfy.samplers.calculate_sigmas(base.model_sampling, "ddim_uniform", steps)
    comfy_out = comfy.sample.sample(model, noise, steps, guidance, "ddim", "ddim_uniform", positive, negative,
                                    latent["samples"], disable_pbar=True, seed=0)
    # KSampler starts at sigma_max * noise (its first sigma is not the schedule's largest); the core's
    # DDIM starts at its variance-preserving latent as given: the same point is noise * s / sqrt(1 + s^2).
    s = sigmas[0]
    start = noise * (s / (1 + s ** 2).sqrt())
    estimates = []
    core_out = core.sample(theirs, cond_latents, AUVector(au), text, steps=steps, guidance=guidance, sampler="ddim",
                           noise=start, callback=lambda i, n, denoised: estimates.append(denoised))
    # The core's DDIM ends at the smallest training sigma (set_alpha_to_one=False, as SD 1.5's config);
    # KSampler's ddim_uniform ends at sigma 0, i.e. at the last step's estimate of the clean latent.
    results["ddim_ksampler_vs_core_last_estimate"] = rel(comfy_out, estimates[-1])
    results["ddim_ksampler_vs_core_output"] = rel(comfy_out, core_out)
    # 4. SamplerCustomAdvanced's parts (CFGGuider + a sampler + sigmas): euler on the same sigmas is KSampler's ddim;
    # dpmpp_2m on karras sigmas just has to run to a finite result.
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(guidance)
    custom = guider.sample(noise, latent["samples"], comfy.samplers.sampler_object("euler"), sigmas, seed=0,
                           disable_pbar=True)
    results["custom_advanced_euler_vs_ksampler_ddim"] = rel(custom, comfy_out)
    karras = comfy.samplers.calculate_sigmas(base.model_sampling, "karras", steps)
    other = guider.sample(noise, latent["samples"], comfy.samplers.sampler_object("dpmpp_2m"), karras, seed=0,
                          disable_pbar=True)
    results["custom_advanced_dpmpp_2m_karras_finite"] = bool(torch.isfinite(other).all())
    results["ddim_start_scale"] = float(s / (1 + s ** 2).sqrt())
    # 5. The pack's own sampler (core loop, ComfyUI's UNet as denoiser) vs the core's diffusers UNet.
    via_comfy = loaded.sample(ours, cond_latents, AUVector(au), text, steps=4, guidance=3.0, sampler="ddim", seed=1)
    via_core = core.sample(theirs, cond_latents, AUVector(au), text, steps=4, guidance=3.0, sampler="ddim", seed=1)
    results["pack_sampler_comfy_unet_vs_core"] = rel(via_comfy, via_core)
    results.update(stacking(pack, loaded, model, ours, g))
    results["ddim_sigmas"] = [round(float(v), 5) for v in sigmas]

    text_out = json.dumps(results, indent=1)
    print(text_out)
    if out:
        Path(out).write_text(text_out)
    return results


class AddsTerm:
    """Another pack's attn1 replacement that adds a known term (0.5 * q), chaining the IPAdapter_plus way:
    what was at the block before it is kept and called."""

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, q, k, v, extra_options):
        import comfy.ldm.modules.attention as attention

        base = (self.previous(q, k, v, extra_options) if self.previous is not None else
                attention.optimized_attention(q, k, v, extra_options["n_heads"]))
        return base + 0.5 * q


def stacking(pack, loaded, model, features, g) -> dict:
    """Our identity patch and AddsTerm at every block, each order, against the sum computed by hand:
    softmax(q [k; id_k]^T / sqrt(d)) [v; id_v] + 0.5 q, with id_k = to_k(norm1(id)), id_v = to_v(norm1(id))."""
    import torch
    from comfyui_magicface.nodes import comfy_model

    def other_pack(patcher):
        patcher = patcher.clone()
        for key, _ in comfy_model.transformer_blocks(patcher):
            patcher.set_model_attn1_replace(AddsTerm(comfy_model._attn1_replacement(patcher, key)), *key)
        return patcher

    denoiser = loaded.patchers["denoiser"]
    orders = {"other_then_ours": comfy_model.with_identity(other_pack(denoiser), features),
              "ours_then_other": other_pack(model)}
    errors = {name: 0.0 for name in orders}
    for (key, block), tokens in zip(comfy_model.transformer_blocks(denoiser), features.tokens):
        heads, width = block.attn1.heads, block.attn1.to_q.out_features
        q, k, v = (torch.randn(2, 16, width, generator=g) for _ in range(3))
        with torch.no_grad():
            normed = block.norm1(tokens)
            id_k, id_v = block.attn1.to_k(normed).expand(2, -1, -1), block.attn1.to_v(normed).expand(2, -1, -1)
            keys, values = torch.cat([k, id_k], 1), torch.cat([v, id_v], 1)
            split = lambda t: t.view(2, t.shape[1], heads, width // heads).transpose(1, 2)
            weights = torch.softmax(split(q) @ split(keys).transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)
            by_hand = (weights @ split(values)).transpose(1, 2).reshape(2, 16, width) + 0.5 * q
            for name, patched in orders.items():
                patch = patched.model_options["transformer_options"]["patches_replace"]["attn1"][key]
                out = patch(q, k, v, {"n_heads": heads})
                errors[name] = max(errors[name], rel(out, by_hand))
    return {f"stacked_{name}_vs_hand": e for name, e in errors.items()}


class _LatentVAE:
    """A VAE whose encoding is given: the check compares samplers, not VAEs."""

    def __init__(self, latents):
        self.latents = latents

    def encode(self, pixels):
        return self.latents.expand(pixels.shape[0], -1, -1, -1)


if __name__ == "__main__":
    main(*sys.argv[1:])
