"""Where weights come from: local paths first, then the Hugging Face hub, with clear offline errors.

Nothing here runs at import time; every download says what it fetches, how big it is and where
it goes before it starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import WeightsNotFoundError

logger = logging.getLogger(__name__)

MAGICFACE_REPO = "mengtingwei/magicface"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"

MAGICFACE_PATTERNS = [
    "denoising_unet/config.json", "denoising_unet/diffusion_pytorch_model.safetensors",
    "ID_enc/config.json", "ID_enc/diffusion_pytorch_model.safetensors",
]
MAGICFACE_DOWNLOAD_GB = 6.9  # two SD 1.5 UNets in fp32
# VAE, text encoder and tokenizer only: MagicFace brings its own UNets.
SD15_PATTERNS = [
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "tokenizer/*",
]
SD15_DOWNLOAD_GB = 0.8


def cache_dir() -> Path:
    """The CLI's folder for downloaded weights (``$MAGICFACE_CACHE``, else ``~/.cache/magicface``)."""
    return Path(os.environ.get("MAGICFACE_CACHE") or Path.home() / ".cache" / "magicface")


def looks_like_repo_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists()


def snapshot(repo_id: str, patterns: list[str], local_dir: Path, size_gb: float, what: str) -> Path:
    """Download ``patterns`` of ``repo_id`` into ``local_dir`` (a no-op for files already there)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with diffusers
        raise WeightsNotFoundError(f"{what}: huggingface_hub is not installed (pip install huggingface_hub)") from exc
    local_dir = Path(local_dir)
    if not _has_all(local_dir, patterns):
        logger.warning("Downloading %s (about %.1f GB) from https://huggingface.co/%s into %s",
                       what, size_gb, repo_id, local_dir)
    try:
        path = snapshot_download(repo_id, allow_patterns=patterns, local_dir=str(local_dir))
    except Exception as exc:  # offline, DNS failure, gated repo, HTTP error: all need the same advice
        raise WeightsNotFoundError(
            f"{what} are not on this machine and could not be downloaded ({type(exc).__name__}: {exc}). "
            f"Download {', '.join(patterns)} from https://huggingface.co/{repo_id} "
            f"and put them in {local_dir} (keeping the sub-folders), or pass the folder's path."
        ) from exc
    return Path(path)


def _has_all(folder: Path, patterns: list[str]) -> bool:
    return all(any(folder.glob(p)) for p in patterns)


def local_folder(repo_id: str, root: str | os.PathLike | None = None) -> Path:
    """Where a hub repository's files are kept: ``<root>/<owner>--<name>`` (root: the cache)."""
    return Path(root or cache_dir()) / repo_id.replace("/", "--")


def fetch_magicface(repo_id: str = MAGICFACE_REPO, root: str | os.PathLike | None = None) -> Path:
    return snapshot(repo_id, MAGICFACE_PATTERNS, local_folder(repo_id, root), MAGICFACE_DOWNLOAD_GB, "MagicFace weights")


def fetch_sd15(repo_id: str = SD15_REPO, root: str | os.PathLike | None = None) -> Path:
    return snapshot(repo_id, SD15_PATTERNS, local_folder(repo_id, root), SD15_DOWNLOAD_GB,
                    "Stable Diffusion 1.5's VAE and text encoder")


def _local_or_hub(text: str, fetch, missing: str) -> Path:
    """A path that exists, else a hub repo id fetched into the cache, else ``missing`` as the error."""
    local = Path(text).expanduser()
    if local.exists():
        return local
    if looks_like_repo_id(text):
        return fetch(text)
    raise WeightsNotFoundError(missing)


def resolve_magicface_weights(path: str | os.PathLike) -> Path:
    """A local checkpoint path; a hub repo id (``mengtingwei/magicface``) is downloaded first."""
    return _local_or_hub(str(path), fetch_magicface, (
        f"no MagicFace weights at {path}. Download denoising_unet/ and ID_enc/ from "
        f"https://huggingface.co/{MAGICFACE_REPO} into one folder and pass that folder."))


def resolve_sd15(path: str | os.PathLike | None) -> Path:
    """A local SD 1.5 diffusers folder (vae/, text_encoder/, tokenizer/), downloading those if needed."""
    return _local_or_hub(str(path or SD15_REPO), fetch_sd15, (
        f"no Stable Diffusion 1.5 folder at {path}. It needs vae/, text_encoder/ and tokenizer/ as in "
        f"https://huggingface.co/{SD15_REPO}"))
