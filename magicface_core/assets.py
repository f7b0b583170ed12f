"""The one registry of downloadable files and the one downloader.

Every file the pack may fetch is a :class:`WeightFile`: where it comes from (a Hugging Face hub
repository at a pinned revision, or a URL), about how big it is, and how a download is checked.
A model made of several files (MagicFace's two UNets, Stable Diffusion 1.5's parts) is a
:class:`WeightFolder` of such entries.

- Each file lives at ``<root>/<backend>/<filename>``; ``root`` is ``models/magicface`` inside
  ComfyUI and :func:`cache_dir` for the CLI.
- A missing file is downloaded on first use (never at import) by one downloader that reports
  progress (ComfyUI's bar, or the CLI's log) and checks the file before it is kept. Hub files
  are downloaded by huggingface_hub (``HF_ENDPOINT`` mirrors, the user's token, proxies, its
  transfer backends, resume), at a pinned revision where one is known, and taken from the
  user's hub cache when it holds them; URL files by a resumable HTTP download (``Range``).
  An interrupted download is kept for the next try. "Downloading ..." is logged only when a
  download really starts, with its size.
- ``MAGICFACE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` switches every download off; the error then
  names the file, where to get it and where to put it. Nothing contacts the network offline.
- An argument that looks like a path (``./x``, ``models/magicfce``, ``C:\\w``, ``*.safetensors``)
  and does not exist is reported as not found, never taken for a hub repository id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import WeightsNotFoundError
from .settings import as_path, option

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)

MAGICFACE_REPO = "mengtingwei/magicface"
# No commit of the authors' repository could be verified when this was written: follow "main".
MAGICFACE_REVISION = "main"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD15_REVISION = "451f4fe16113bff5a5d2269ed5ad43b0592e9a14"  # the RunwayML mirror's weights, immutable
SD15_LICENSE = "CreativeML OpenRAIL-M"
MAGICFACE_LICENSE = "MagicFace weights (mengtingwei/magicface); see the repository's model card"


@dataclass(frozen=True)
class WeightFile:
    backend: str  # sub-folder under the weights root
    filename: str
    url: str  # where a person fetches it by hand
    approx_mb: float
    license: str
    # How a download is checked: the first of these that is set.
    sha256: str | None = None  # the full digest, when published
    sha256_prefix: str | None = None  # torch.hub-style names carry the digest's first hex digits
    git_blob_sha1: str | None = None  # files served from a git repository: the blob id of that commit
    # Files on the Hugging Face hub: fetched with huggingface_hub and, without a digest above,
    # checked against what the hub reports for them at ``revision`` (LFS sha256, or git blob id).
    hf_repo: str | None = None
    hf_path: str | None = None
    revision: str | None = None

    def path(self, root: str | os.PathLike) -> Path:
        return Path(root) / self.backend / self.filename


@dataclass(frozen=True)
class WeightFolder:
    """The files of one hub repository that load together, as a diffusers-style folder."""

    what: str  # for messages: "MagicFace weights"
    repo: str
    files: tuple[WeightFile, ...]

    def path(self, root: str | os.PathLike) -> Path:
        return Path(root) / local_folder_name(self.repo)

    @property
    def approx_mb(self) -> float:
        return sum(f.approx_mb for f in self.files)


def local_folder_name(repo_id: str) -> str:
    return repo_id.replace("/", "--")


def hub_file(repo: str, path: str, approx_mb: float, license: str, revision: str | None = None,
             **check) -> WeightFile:
    """A file of a hub repository, kept at ``<root>/<owner>--<name>/<path>``."""
    folder, _, name = f"{local_folder_name(repo)}/{path}".rpartition("/")
    return WeightFile(folder, name, f"https://huggingface.co/{repo}/resolve/{revision or 'main'}/{path}",
                      approx_mb, license, hf_repo=repo, hf_path=path, revision=revision, **check)


# --- the registry ------------------------------------------------------------------------------

def magicface_folder(repo: str = MAGICFACE_REPO, revision: str | None = MAGICFACE_REVISION) -> WeightFolder:
    """The authors' two UNets in fp32 (about 6.9 GB)."""
    files = []
    for part in ("denoising_unet", "ID_enc"):
        files += [hub_file(repo, f"{part}/config.json", 0.01, MAGICFACE_LICENSE, revision),
                  hub_file(repo, f"{part}/diffusion_pytorch_model.safetensors", 3440, MAGICFACE_LICENSE, revision)]
    return WeightFolder("MagicFace weights", repo, tuple(files))


_TOKENIZER_FILES = (("merges.txt", 0.5), ("special_tokens_map.json", 0.01), ("tokenizer_config.json", 0.01),
                    ("vocab.json", 1.1))


def sd15_folder(repo: str = SD15_REPO, revision: str | None = SD15_REVISION, with_unet: bool = False) -> WeightFolder:
    """SD 1.5's VAE, text encoder and tokenizer (about 0.8 GB); ``with_unet`` adds the UNet training starts from."""
    entries = [("vae/config.json", 0.01), ("vae/diffusion_pytorch_model.safetensors", 335),
               ("text_encoder/config.json", 0.01), ("text_encoder/model.safetensors", 492)]
    entries += [(f"tokenizer/{name}", mb) for name, mb in _TOKENIZER_FILES]
    if with_unet:
        entries += [("unet/config.json", 0.01), ("unet/diffusion_pytorch_model.safetensors", 3440)]
    what = "Stable Diffusion 1.5 (UNet, VAE, text encoder)" if with_unet else "Stable Diffusion 1.5's VAE and text encoder"
    return WeightFolder(what, repo, tuple(hub_file(repo, p, mb, SD15_LICENSE, revision) for p, mb in entries))


MAGICFACE = magicface_folder()
SD15 = sd15_folder()
SD15_WITH_UNET = sd15_folder(with_unet=True)
MAGICFACE_DOWNLOAD_GB = round(MAGICFACE.approx_mb / 1000, 1)

BISENET = WeightFile(
    "bisenet", "79999_iter.pth", f"https://huggingface.co/{MAGICFACE_REPO}/resolve/main/79999_iter.pth", 51,
    "CelebAMask-HQ face parsing (zllrunning/face-parsing.PyTorch); research use",
    hf_repo=MAGICFACE_REPO, hf_path="79999_iter.pth", revision=MAGICFACE_REVISION,
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
# The 3DMM jaw: D3DFR and the Basel Face Model, as the authors publish them. Their condition script
# reads them from checkpoints/third_party/, and the repo also has a third_party_files/ folder:
# hf_path=None means "find the file by name in the repo's file list" (see hub_path).
_THIRD_PARTY = f"https://huggingface.co/{MAGICFACE_REPO} (in checkpoints/third_party/ or third_party_files/)"
D3DFR = WeightFile(
    "d3dfr", "d3dfr_res50_nofc.pth", _THIRD_PARTY, 96,
    "D3DFR 3DMM regressor (ResNet-50), as published by the MagicFace authors; research use",
    hf_repo=MAGICFACE_REPO, revision=MAGICFACE_REVISION,
)
BFM = WeightFile(
    "d3dfr", "BFM_model_front.mat", _THIRD_PARTY, 127,
    "Basel Face Model 2009 (front part); University of Basel licence, non-commercial research only",
    hf_repo=MAGICFACE_REPO, revision=MAGICFACE_REVISION,
)
ALL_FILES = (BISENET, S3FD, FAN_2D, LIBREFACE_AU, D3DFR, BFM)  # the preprocessing networks
ALL_FOLDERS = (MAGICFACE, SD15_WITH_UNET)


# --- where files go ----------------------------------------------------------------------------

def cache_dir() -> Path:
    """The CLI's folder for downloaded weights (``$MAGICFACE_CACHE``, else ``~/.cache/magicface``)."""
    return Path(os.environ.get("MAGICFACE_CACHE") or Path.home() / ".cache" / "magicface")


def preprocessing_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the CLI keeps the preprocessing networks: ``<root or cache>/preprocessing``."""
    return Path(root or cache_dir()) / "preprocessing"


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("MAGICFACE_OFFLINE", "HF_HUB_OFFLINE"))


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".tar", ".json", ".yaml")
# Folder names people keep weights in: "models/magicfce" is a mistyped path, not the hub user "models".
_LOCAL_FOLDER_NAMES = {"models", "model", "weights", "checkpoints", "ckpt", "output", "outputs", "data", "home"}


def is_repo_id(text: str) -> bool:
    """Whether ``text`` can only be a hub repository id, not a (mistyped) local path.

    A repo id is ``owner/name`` in the hub's characters, with no file suffix, and its owner is
    neither an existing folder here nor a usual weights-folder name.
    """
    if not _REPO_ID.fullmatch(text) or text.lower().endswith(_WEIGHT_SUFFIXES):
        return False
    owner = text.split("/")[0]
    return owner.lower() not in _LOCAL_FOLDER_NAMES and not Path(owner).exists()


# --- the downloader ----------------------------------------------------------------------------

def ensure_weight(spec: WeightFile, root: str | os.PathLike, progress: Progress | None = None,
                  search: tuple[str | os.PathLike, ...] = ()) -> Path:
    """The local path of ``spec``, downloading and checking it first if it is not there.

    ``search`` lists other folders that may already hold the file under its own name
    (for example the published MagicFace folder, which ships ``79999_iter.pth``).

    Hub files come through huggingface_hub (its resume, transfer backends, ``HF_ENDPOINT``, token
    and proxies), copied from the user's hub cache when it already holds them; URL files through a
    resumable HTTP download. An interrupted download is kept and resumed by the next try; a file
    is moved to its place only once its check passed.
    """
    target = spec.path(root)
    if target.is_file():
        return target
    for folder in search:
        candidate = Path(folder) / spec.filename
        if candidate.is_file():
            return candidate
    # The hub cache answers for a pinned commit (it cannot change) and offline; for a branch online,
    # huggingface_hub asks the hub whether the cached file is still current.
    pinned = bool(spec.revision and re.fullmatch(r"[0-9a-f]{40}", spec.revision))
    cached = _from_hub_cache(spec) if offline() or pinned else None
    if offline() and cached is None:
        raise _missing(spec, target, "downloads are switched off (MAGICFACE_OFFLINE / HF_HUB_OFFLINE)")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if cached is not None:
            downloaded = _copy_beside(cached, target)
        elif spec.hf_repo is not None:
            downloaded = _fetch_from_hub(spec, Path(root), target, progress)
        else:
            downloaded = _fetch_url(spec, target, progress)
    except WeightsNotFoundError:
        raise
    except Exception as exc:  # offline, DNS failure, gated repo, HTTP error: all need the same advice
        raise _missing(spec, target, f"the download failed ({type(exc).__name__}: {exc})") from exc
    if downloaded == target:
        return target
    try:
        verify(spec, downloaded, cached)
    except WeightsNotFoundError:
        downloaded.unlink(missing_ok=True)  # a corrupt file is not resumed from
        raise
    os.replace(downloaded, target)
    return target


def ensure_folder(folder: WeightFolder, root: str | os.PathLike, progress: Progress | None = None) -> Path:
    """The local folder holding all of ``folder``'s files, downloading the missing ones."""
    missing = [f for f in folder.files if not f.path(root).is_file()]
    if missing and offline():
        absent = [f for f in missing if _from_hub_cache(f) is None]
        if absent:
            listed = ", ".join(f.hf_path or f.filename for f in absent)
            raise WeightsNotFoundError(
                f"{folder.what} are not on this machine ({listed} missing) and downloads are switched off "
                f"(MAGICFACE_OFFLINE / HF_HUB_OFFLINE). Download them from https://huggingface.co/{folder.repo} "
                f"into {folder.path(root)} (keeping the sub-folders), or pass the folder's path."
            )
    for spec in missing:
        ensure_weight(spec, root, progress)
    return folder.path(root)


# Downloads in progress, kept between tries (huggingface_hub's resumable .incomplete files live here).
DOWNLOADS = ".downloads"


def _announce(spec: WeightFile, url: str, target: Path) -> None:
    logger.warning("Downloading %s (%s) from %s to %s", spec.hf_path or spec.filename, _size(spec.approx_mb),
                   url, target)


def _fetch_from_hub(spec: WeightFile, root: Path, target: Path, progress: Progress | None) -> Path:
    """huggingface_hub's download into ``<root>/.downloads/<repo>/``, beside the target's folder tree
    (same disk: the move into place is a rename). It resumes an interrupted file and copies one
    its cache already holds at that revision instead of downloading it."""
    from huggingface_hub import hf_hub_download, hf_hub_url

    path = hub_path(spec)
    _announce(spec, hf_hub_url(spec.hf_repo, path, revision=spec.revision), target)
    staging = root / DOWNLOADS / local_folder_name(spec.hf_repo)
    return Path(hf_hub_download(spec.hf_repo, path, revision=spec.revision, local_dir=staging,
                                library_name="comfyui-magicface", tqdm_class=_progress_bar(progress)))


def _from_hub_cache(spec: WeightFile) -> Path | None:
    """The file in the user's Hugging Face cache at ``spec``'s revision, found without the network."""
    if spec.hf_repo is None or spec.hf_path is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.hf_repo, spec.hf_path, revision=spec.revision or "main")
    if not isinstance(found, str):
        return None
    # A cache whose files are blobs named by their checksum (symlinked); one made without symlinks
    # (some Windows setups) holds plain copies that cannot be checked offline.
    blob = Path(os.path.realpath(found)).name
    return Path(found) if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", blob) else None


def _copy_beside(source: Path, target: Path) -> Path:
    """``source`` copied to a unique name beside ``target`` (a hard link where the disk allows it)."""
    copy = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.copy")
    try:
        os.link(source.resolve(), copy)
    except OSError:
        shutil.copyfile(source, copy)
    return copy


def _progress_bar(progress: Progress | None):
    """A tqdm class for huggingface_hub that also reports to ``progress`` (ComfyUI's bar)."""
    if progress is None:
        return None
    from huggingface_hub.utils import tqdm as hub_tqdm

    class Reporting(hub_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)  # counted here: a disabled bar counts nothing

        def update(self, n=1):
            self._done += int(n or 0)
            progress(self._done, int(self.total or 0))
            return super().update(n)

    return Reporting


def _fetch_url(spec: WeightFile, target: Path, progress: Progress | None) -> Path:
    """A resumable HTTP download: the bytes so far stay in a partial file named after the URL beside
    the target, and the next try asks for the rest with a ``Range`` request."""
    from filelock import FileLock  # huggingface_hub's own dependency

    key = hashlib.sha256(spec.url.encode()).hexdigest()[:12]
    partial = target.with_name(f".{target.name}.{key}.partial")
    _announce(spec, spec.url, target)
    with FileLock(str(partial) + ".lock"):  # two processes never append to the same partial file
        if target.is_file():  # another process finished it while this one waited
            return target
        _download(spec.url, {"User-Agent": "ComfyUI-MagicFace"}, partial, progress)
    Path(str(partial) + ".lock").unlink(missing_ok=True)
    return partial


def hub_path(spec: WeightFile) -> str:
    """The file's path in its hub repo: ``hf_path``, or the one file of that name in the repo's file list."""
    if spec.hf_path is not None:
        return spec.hf_path
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(spec.hf_repo, revision=spec.revision)
    matches = sorted(p for p in files if p.rsplit("/", 1)[-1] == spec.filename)
    if not matches:
        raise WeightsNotFoundError(f"https://huggingface.co/{spec.hf_repo} has no file named {spec.filename}")
    return matches[0]


def verify(spec: WeightFile, path: Path, cached: Path | None = None) -> None:
    """Raise :class:`WeightsNotFoundError` unless ``path`` is the file ``spec`` describes.

    ``cached``: where ``path`` was copied from in the hub cache, whose blob is named by its checksum."""
    data_hash = hashlib.sha256()
    blob_hash = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            data_hash.update(chunk)
            blob_hash.update(chunk)
    digest, blob = data_hash.hexdigest(), blob_hash.hexdigest()
    if spec.sha256 is not None:
        ok, expected, got = digest == spec.sha256, spec.sha256, digest
    elif spec.sha256_prefix is not None:
        ok, expected, got = digest.startswith(spec.sha256_prefix), spec.sha256_prefix + "...", digest
    elif spec.git_blob_sha1 is not None:
        ok, expected, got = blob == spec.git_blob_sha1, f"git blob {spec.git_blob_sha1}", f"git blob {blob}"
    elif spec.hf_repo is not None:
        kind, value = _cache_checksum(cached) if cached is not None else _hub_checksum(spec)
        got = digest if kind == "sha256" else f"git blob {blob}"
        expected = value if kind == "sha256" else f"git blob {value}"
        ok = got == expected
    else:  # pragma: no cover - every registered file has a check
        raise AssertionError(f"{spec.filename} has no integrity check")
    if not ok:
        raise WeightsNotFoundError(
            f"the download of {spec.filename} is corrupt ({got}, expected {expected}); "
            f"delete it and try again, or fetch {spec.url} by hand"
        )


def _hub_checksum(spec: WeightFile) -> tuple[str, str]:
    """What the hub says the file is: ``("sha256", digest)`` for LFS files, else ``("blob", git id)``."""
    from huggingface_hub import HfApi

    path = hub_path(spec)
    info = HfApi().get_paths_info(spec.hf_repo, [path], revision=spec.revision)[0]
    lfs = getattr(info, "lfs", None)
    if lfs is not None:
        return "sha256", lfs.sha256
    if getattr(info, "blob_id", None):
        return "blob", info.blob_id
    raise WeightsNotFoundError(f"the hub does not report a checksum for {spec.hf_repo}/{path}")


def _cache_checksum(path: Path) -> tuple[str, str]:
    """What the hub cache says a file is: its blob's name (the LFS sha256, or the git blob id)."""
    name = Path(os.path.realpath(path)).name
    return ("sha256", name) if len(name) == 64 else ("blob", name)


def _download(url: str, headers: dict, destination: Path, progress: Progress | None) -> None:
    """Append the rest of ``url`` to ``destination`` (all of it when the server ignores ``Range``)."""
    import urllib.error

    have = destination.stat().st_size if destination.is_file() else 0
    request = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is whole (the check says)
            return
        raise
    with response:
        resumed = have and getattr(response, "status", None) == 206
        done = have if resumed else 0
        total = int(response.headers.get("Content-Length") or 0)
        total = total + done if total else 0
        with open(destination, "ab" if resumed else "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total and done < total:  # urllib ends a cut-off body quietly; the bytes so far are kept
        raise ConnectionError(f"the connection closed after {done} of {total} bytes; run again to resume")


def _size(mb: float) -> str:
    return f"about {mb / 1000:.1f} GB" if mb >= 1000 else f"about {mb:.0f} MB" if mb >= 1 else "a few kB"


def _missing(spec: WeightFile, target: Path, why: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{spec.filename} is needed but not on this machine, and {why}. "
        f"Download it from {spec.url} ({_size(spec.approx_mb)}) and save it as {target}."
    )


# --- a user's argument: a local path, or a hub repository ----------------------------------------

def fetch_magicface(repo_id: str = MAGICFACE_REPO, root: str | os.PathLike | None = None,
                    progress: Progress | None = None) -> Path:
    folder = MAGICFACE if repo_id == MAGICFACE_REPO else magicface_folder(repo_id, revision=None)
    return ensure_folder(folder, root or cache_dir(), progress)


def fetch_sd15(repo_id: str = SD15_REPO, root: str | os.PathLike | None = None, with_unet: bool = False,
               progress: Progress | None = None) -> Path:
    revision = SD15_REVISION if repo_id == SD15_REPO else None
    return ensure_folder(sd15_folder(repo_id, revision, with_unet), root or cache_dir(), progress)


def _local_or_hub(text: str, fetch: Callable[[str], Path], what: str, hint: str) -> Path:
    """A path that exists, else a hub repo id fetched into the cache; anything else is not found."""
    local = Path(text).expanduser()
    if local.exists():
        return local
    if is_repo_id(text):
        return fetch(text)
    raise WeightsNotFoundError(f"no {what} at {text}: there is no such file or folder. {hint}")


def resolve_magicface_weights(path: str | os.PathLike) -> Path:
    """A local checkpoint path; a hub repo id (``mengtingwei/magicface``) is downloaded first."""
    return _local_or_hub(str(path), fetch_magicface, "MagicFace weights", (
        f"Pass the folder holding denoising_unet/ and ID_enc/ (from https://huggingface.co/{MAGICFACE_REPO}), "
        f"a .safetensors file written by this pack, or the hub id {MAGICFACE_REPO}."))


def resolve_sd15(path: str | os.PathLike | None, with_unet: bool = False) -> Path:
    """A local SD 1.5 diffusers folder (vae/, text_encoder/, tokenizer/, and unet/ ``with_unet``),
    downloading those if ``path`` is a hub repo id (default: SD 1.5 itself)."""
    return _local_or_hub(str(path or SD15_REPO), lambda repo: fetch_sd15(repo, with_unet=with_unet),
                         "Stable Diffusion 1.5 folder", (
        f"It needs vae/, text_encoder/ and tokenizer/{' and unet/' if with_unet else ''} as in "
        f"https://huggingface.co/{SD15_REPO}, or pass that hub id."))


# --- FineFace (issue 18): AU-controlled text-to-image on SD 2.1-base -----------------------------

FINEFACE_REPO = "Tvaranka/fineface"
# No commit of the hub repo could be verified offline: follow "main" and check what the hub reports.
FINEFACE_REVISION = "main"
FINEFACE_LICENSE = "FineFace weights (Tvaranka/fineface), trained on research datasets; see the model card"


def fineface_folder(repo: str = FINEFACE_REPO, revision: str | None = FINEFACE_REVISION) -> WeightFolder:
    """FineFace's three published files for SD 2.1-base (about 130 MB)."""
    entries = (("attn_processors.ckpt", 102), ("au_encoder.ckpt", 0.01), ("pytorch_lora_weights.safetensors", 27))
    return WeightFolder("FineFace weights", repo, tuple(hub_file(repo, p, mb, FINEFACE_LICENSE, revision)
                                                        for p, mb in entries))


FINEFACE = fineface_folder()
# The SD 1.5 variant's files: hf_path=None, found by name in the repo's file list when first needed.
FINEFACE_SD15_FILES = tuple(
    WeightFile(local_folder_name(FINEFACE_REPO), name, f"https://huggingface.co/{FINEFACE_REPO}", mb, FINEFACE_LICENSE,
               hf_repo=FINEFACE_REPO, revision=FINEFACE_REVISION)
    for name, mb in (("sd15_attn_processors.ckpt", 80), ("sd15_au_encoder.ckpt", 0.05)))


def fetch_fineface(repo_id: str = FINEFACE_REPO, root: str | os.PathLike | None = None,
                   progress: Progress | None = None, sd15_variant: bool = False) -> Path:
    root = root or cache_dir()
    folder = ensure_folder(FINEFACE if repo_id == FINEFACE_REPO else fineface_folder(repo_id, None), root, progress)
    if sd15_variant:
        for spec in FINEFACE_SD15_FILES:
            ensure_weight(spec, root, progress)
    return folder


def resolve_fineface(path: str | os.PathLike = FINEFACE_REPO, sd15_variant: bool = False) -> Path:
    """A local folder holding FineFace's files; a hub repo id (``Tvaranka/fineface``) is downloaded first."""
    return _local_or_hub(str(path), lambda repo: fetch_fineface(repo, sd15_variant=sd15_variant), "FineFace weights", (
        f"Pass the folder holding attn_processors.ckpt, au_encoder.ckpt and pytorch_lora_weights.safetensors "
        f"(from https://huggingface.co/{FINEFACE_REPO}), or the hub id {FINEFACE_REPO}."))


@dataclass(frozen=True)
class DownloadJob:
    """``python -m magicface_core download``: every weight the CLI needs, fetched ahead of time."""

    to: Path | None = option(None, "weights folder (default: the magicface cache)")
    training: bool = option(False, "also SD 1.5's UNet, which training starts from")

    def __post_init__(self):
        object.__setattr__(self, "to", as_path(self.to))
