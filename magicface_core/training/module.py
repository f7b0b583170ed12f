"""Both UNets as the one ``nn.Module`` that training optimises and accelerate prepares.

DistributedDataParallel sees what a forward pass uses only through the module it wraps, so
the identity features must pass from the ID encoder to the denoiser inside one forward, and
every parameter of the module must reach its output. The ID encoder is therefore its trunk:
everything up to its last transformer block's input, whose features are all the denoiser
takes. The layers after that point stay in :class:`MagicFace`'s full encoder, unchanged
from the base weights, so the exported checkpoint keeps the published layout.
"""

from __future__ import annotations

import torch

from ..model.magicface import ID_ENCODER_TIMESTEP, MagicFace


class MagicFaceTrainingModule(torch.nn.Module):
    """``forward(batch)`` encodes the identity, binds it for this call only and predicts the noise."""

    def __init__(self, magicface: MagicFace):
        super().__init__()
        self.denoiser = magicface.denoiser
        self.id_encoder = magicface.recorder.trunk()  # shares every weight it holds with magicface.id_encoder
        self._recorder = magicface.recorder
        self._injection = magicface.injection

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``batch``: ``id_latents`` and ``cond_latents`` (unscaled), ``noisy`` (scaled), ``timesteps``,
        ``au`` and ``text``. Returns the predicted noise."""
        text = batch["text"]
        id_timesteps = torch.full_like(batch["timesteps"], ID_ENCODER_TIMESTEP)
        features = self._recorder.record(
            lambda: self.id_encoder(batch["id_latents"], id_timesteps, encoder_hidden_states=text))
        return self.denoiser(torch.cat([batch["noisy"], batch["cond_latents"]], dim=1), batch["timesteps"],
                             encoder_hidden_states=text, class_labels=batch["au"],
                             **self._injection.call_kwargs(features)).sample
