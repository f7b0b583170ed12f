"""FineFace (Varanka et al., arXiv 2407.20175): text-to-image with the expression given as 12 absolute AUs.

Plain Python over diffusers; no ComfyUI imports. ``FineFace.from_pretrained(...).sample(...)``
returns the latents the authors' StableDiffusionPipeline holds before ``vae.decode``.
"""

from .attention import FineFaceAttnProcessor, au_term, full_au_attention
from .au_token import AUEncoder, au_tokens
from .pipeline import FineFace

__all__ = ["AUEncoder", "FineFace", "FineFaceAttnProcessor", "au_term", "au_tokens", "full_au_attention"]
