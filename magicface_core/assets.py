"""The one registry of downloadable files and the one downloader (being consolidated; see issue 13).

Where weights come from: local paths first, then the Hugging Face hub, with clear offline errors.

Nothing here runs at import time; every download says what it fetches, how big it is and where
it goes before it starts.

The preprocessing networks' weight files: where each comes from, how it is checked, where it goes.

Each file lives at ``<root>/<backend>/<filename>``; ``root`` is ``models/magicface`` inside
ComfyUI and :func:`magicface_core.assets.cache_dir` for the CLI. A missing file is downloaded on
first use (never at import), with progress, and checked before it is kept; offline, the error
names the file, its URL and where to put it.
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



import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import WeightsNotFoundError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)


@dataclass(frozen=True)
class WeightFile:
    backend: str  # sub-folder under the weights root
    filename: str
    url: str
    approx_mb: int
    license: str
    # One of these says how a download is checked.
    sha256: str | None = None  # the full digest, when published
    sha256_prefix: str | None = None  # torch.hub-style names carry the digest's first hex digits
    git_blob_sha1: str | None = None  # files served from a git repository: the blob id of that commit
    hf_repo: str | None = None  # files on the Hugging Face hub: checked against the hub's LFS sha256
    hf_path: str | None = None

    def path(self, root: str | os.PathLike) -> Path:
        return Path(root) / self.backend / self.filename


BISENET = WeightFile(
    "bisenet", "79999_iter.pth", f"https://huggingface.co/{MAGICFACE_REPO}/resolve/main/79999_iter.pth", 51,
    "CelebAMask-HQ face parsing (zllrunning/face-parsing.PyTorch); research use",
    hf_repo=MAGICFACE_REPO, hf_path="79999_iter.pth",
)
S3FD = WeightFile(
    "face_alignment", "s3fd-619a316812.pth", "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    86, "face-alignment's S3FD face detector (BSD-3-Clause code)", sha256_prefix="619a316812",
)
FAN_2D = WeightFile(
    "face_alignment", "2DFAN4-11f355bf06.pth.tar",
    "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    93, "face-alignment's 2D-FAN 68-point landmarks (BSD-3-Clause code)", sha256_prefix="11f355bf06",
)
_LIBREFACE_COMMIT = "7bf7ed7360a01bb5523f4309e8beacb1b403ad2d"
LIBREFACE_AU = WeightFile(
    "libreface", "au_intensity_resnet18_disfa.pt",
    f"https://raw.githubusercontent.com/ihp-lab/LibreFace/{_LIBREFACE_COMMIT}/"
    "AU_Recognition/resnet_disfa_all/DISFA/all/resnet.pt",
    45, "LibreFace AU intensity (ResNet-18, DISFA); USC research license, non-commercial",
    git_blob_sha1="fd9be02c4c21332529041f68b63e17030b721eaa",
)
ALL_FILES = (BISENET, S3FD, FAN_2D, LIBREFACE_AU)

# --- The 3DMM jaw (issue 9): D3DFR and the Basel Face Model, as the authors publish them. -----------
# Their condition script reads them from checkpoints/third_party/, and the repo also has a
# third_party_files/ folder: hf_path=None means "find the file by name in the repo's file list".
D3DFR = WeightFile(
    "d3dfr", "d3dfr_res50_nofc.pth", f"https://huggingface.co/{MAGICFACE_REPO}/tree/main", 96,
    "D3DFR 3DMM regressor (ResNet-50), as published by the MagicFace authors; research use",
    hf_repo=MAGICFACE_REPO,
)
BFM = WeightFile(
    "d3dfr", "BFM_model_front.mat", f"https://huggingface.co/{MAGICFACE_REPO}/tree/main", 127,
    "Basel Face Model 2009 (front part); University of Basel licence, non-commercial research only",
    hf_repo=MAGICFACE_REPO,
)
ALL_FILES = ALL_FILES + (D3DFR, BFM)


def hub_path(spec: WeightFile) -> str:
    """The file's path in its hub repo: ``hf_path``, or the one file of that name in the repo's file list."""
    if spec.hf_path is not None:
        return spec.hf_path
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(spec.hf_repo)
    except Exception as exc:  # offline, DNS, HTTP errors: the same advice
        raise WeightsNotFoundError(
            f"{spec.filename} is needed but not on this machine, and the file list of {spec.hf_repo} could not be "
            f"read ({type(exc).__name__}: {exc}). Download it from {spec.url} (about {spec.approx_mb} MB; in "
            f"checkpoints/third_party/ or third_party_files/) and save it under {spec.backend}/ in the weights folder."
        ) from exc
    matches = sorted(p for p in files if p.rsplit("/", 1)[-1] == spec.filename)
    if not matches:
        raise WeightsNotFoundError(f"https://huggingface.co/{spec.hf_repo} has no file named {spec.filename}")
    return matches[0]


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("MAGICFACE_OFFLINE", "HF_HUB_OFFLINE"))


def ensure_weight(spec: WeightFile, root: str | os.PathLike, progress: Progress | None = None,
                  search: tuple[str | os.PathLike, ...] = ()) -> Path:
    """The local path of ``spec``, downloading and checking it first if it is not there.

    ``search`` lists other folders that may already hold the file under its own name
    (for example the published MagicFace folder, which ships ``79999_iter.pth``).
    """
    target = spec.path(root)
    if target.is_file():
        return target
    for folder in search:
        candidate = Path(folder) / spec.filename
        if candidate.is_file():
            return candidate
    if offline():
        raise _missing(spec, target, "downloads are switched off (MAGICFACE_OFFLINE / HF_HUB_OFFLINE)")
    logger.warning("Downloading %s (about %d MB) from %s to %s", spec.filename, spec.approx_mb, spec.url, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / spec.filename
        try:
            _download(_source_url(spec), partial, progress)
        except OSError as exc:
            raise _missing(spec, target, f"the download failed ({exc})") from exc
        verify(spec, partial)
        shutil.move(str(partial), target)
    return target


def verify(spec: WeightFile, path: Path) -> None:
    """Raise :class:`WeightsNotFoundError` unless ``path`` is the file ``spec`` describes."""
    data_hash = hashlib.sha256()
    blob_hash = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            data_hash.update(chunk)
            blob_hash.update(chunk)
    digest = data_hash.hexdigest()
    if spec.sha256 is not None:
        ok, expected = digest == spec.sha256, spec.sha256
    elif spec.sha256_prefix is not None:
        ok, expected = digest.startswith(spec.sha256_prefix), spec.sha256_prefix + "..."
    elif spec.git_blob_sha1 is not None:
        ok, expected = blob_hash.hexdigest() == spec.git_blob_sha1, f"git blob {spec.git_blob_sha1}"
        digest = f"git blob {blob_hash.hexdigest()}"
    elif spec.hf_repo is not None:
        expected = _hub_sha256(spec)
        ok = digest == expected
    else:  # pragma: no cover - every registered file has a check
        raise AssertionError(f"{spec.filename} has no integrity check")
    if not ok:
        raise WeightsNotFoundError(
            f"the download of {spec.filename} is corrupt (sha256 {digest}, expected {expected}); "
            f"delete it and try again, or fetch {spec.url} by hand"
        )


def _source_url(spec: WeightFile) -> str:
    if spec.hf_repo is None:
        return spec.url
    from huggingface_hub import hf_hub_url  # honours HF_ENDPOINT mirrors

    return hf_hub_url(spec.hf_repo, hub_path(spec))


def _hub_sha256(spec: WeightFile) -> str:
    from huggingface_hub import HfApi

    path = hub_path(spec)
    info = HfApi().get_paths_info(spec.hf_repo, [path])[0]
    if getattr(info, "lfs", None) is None:
        raise WeightsNotFoundError(f"the hub does not report a sha256 for {spec.hf_repo}/{path}")
    return info.lfs.sha256


def _download(url: str, destination: Path, progress: Progress | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "ComfyUI-MagicFace"})
    with urllib.request.urlopen(request, timeout=60) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        for chunk in iter(lambda: response.read(1 << 20), b""):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)


def _missing(spec: WeightFile, target: Path, why: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{spec.filename} is needed but not on this machine, and {why}. "
        f"Download it from {spec.url} (about {spec.approx_mb} MB) and save it as {target}."
    )
