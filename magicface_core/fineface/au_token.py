"""The AU token FineFace adds to every cross-attention.

SD 2.1: ``[12 raw AUs | Linear(12->64)(AUs) | zeros]`` padded to 1024, shape ``[B, 1, 1024]``.
SD 1.5 variant: ``[12 raw AUs | Linear(12->756)(AUs)]`` = 768 wide, no padding.
The unconditional branch uses the encoder of zero AUs, i.e. its bias, not a zero token.
"""

from __future__ import annotations

import torch
from torch import nn

from ..au import NUM_AUS, AUVector

SD2_WIDTH = 1024
SD15_WIDTH = 768
SD2_HIDDEN = 64
SD15_HIDDEN = SD15_WIDTH - NUM_AUS  # 756


class AUEncoder(nn.Module):
    """``au_encoder.ckpt``'s module: one ``Linear(12 -> hidden)`` under the name ``au_encoder``."""

    def __init__(self, width: int = SD2_WIDTH, hidden: int = SD2_HIDDEN):
        super().__init__()
        if hidden + NUM_AUS > width:
            raise ValueError(f"an AU token of {NUM_AUS}+{hidden} values does not fit a width of {width}")
        self.au_encoder = nn.Linear(NUM_AUS, hidden)
        self.width = width

    @classmethod
    def for_width(cls, width: int) -> "AUEncoder":
        """SD 2.x (1024) or the SD 1.5 variant (768)."""
        return cls(width, SD2_HIDDEN if width == SD2_WIDTH else width - NUM_AUS)

    def forward(self, aus: torch.Tensor) -> torch.Tensor:
        aus = aus.to(self.au_encoder.weight.dtype)
        token = torch.cat([aus, self.au_encoder(aus)], dim=1)
        pad = self.width - token.shape[1]
        if pad:
            token = torch.cat([token, token.new_zeros(token.shape[0], pad)], dim=1)
        return token.reshape(-1, 1, self.width)


def au_tokens(encoder: AUEncoder, aus: AUVector | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uncond, cond)`` tokens ``[B, 1, width]`` for absolute AUs ``[B, 12]``."""
    values = aus.values if isinstance(aus, AUVector) else AUVector(aus).values
    values = values.to(encoder.au_encoder.weight.device)
    return encoder(torch.zeros_like(values)), encoder(values)
