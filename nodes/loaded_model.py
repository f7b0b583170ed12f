"""What MagicFace Model Loader outputs: the two UNets, each under ONE patcher of ComfyUI's.

In ComfyUI each UNet's weights are held by one ComfyUI UNet (``comfy_model``) under the patcher
class ComfyUI's own loaders use (dynamic VRAM where the version has it). Both sampling paths run
there: the MODEL path (KSampler) and the pack's own sampler, whose loop is the core's with
ComfyUI's UNet as its denoiser. Outside ComfyUI the core runs its diffusers UNets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..magicface_core import MagicFace, MagicFaceError
from ..magicface_core.model.identity_attention import IdentityFeatures
from . import host


@dataclass
class LoadedMagicFace:
    model: MagicFace
    name: str
    patchers: dict = field(default_factory=dict, repr=False)  # "denoiser" / "id_encoder" -> ComfyUI patcher

    @classmethod
    def wrap(cls, model: MagicFace, name: str) -> "LoadedMagicFace":
        patchers = {}
        if host.in_comfyui():
            from . import comfy_model

            for part, unet in (("denoiser", model.denoiser), ("id_encoder", model.id_encoder)):
                patchers[part] = comfy_model.build_patcher(unet, part == "denoiser", host.torch_device(),
                                                           host.offload_device())
        return cls(model, name, patchers)

    @property
    def text_dim(self) -> int:
        return self.model.denoiser.config.cross_attention_dim

    def encode_identity(self, id_latents: torch.Tensor, text: torch.Tensor) -> IdentityFeatures:
        """The ID encoder's features: ComfyUI's UNet under its memory management, or the core's."""
        if not self.patchers:
            self.model.to(host.torch_device())
            return self.model.encode_identity(id_latents, text)
        from . import comfy_model

        return comfy_model.encode_identity(self.patchers["id_encoder"], id_latents, text)

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """The core's sampler (:meth:`MagicFace.sample`), denoising with ComfyUI's UNet in ComfyUI."""
        if not self.patchers:
            self.model.to(host.torch_device())
            return self.model.sample(*args, **kwargs)
        from . import comfy_model

        return self.model.sample(*args, denoiser=comfy_model.denoiser_for(self.patchers["denoiser"]), **kwargs)

    def identity_model(self, features: IdentityFeatures):
        """The denoiser as a ComfyUI MODEL whose self-attentions see ``features``."""
        if not self.patchers:
            raise MagicFaceError("a ComfyUI MODEL exists only inside ComfyUI; outside it, sample with "
                                 "MagicFace.sample (magicface_core)")
        from . import comfy_model

        return comfy_model.with_identity(self.patchers["denoiser"], features)
