"""The bad-input matrix (issue 10): one row per way a hostile but realistic user gets it wrong.

Each row asserts the key words of the message, that nothing on disk was written or changed
(every file under the work folder is hashed before and after), and, for settings, that it
failed before any model loaded: the MagicFace, SD 1.5 and face-network loaders are replaced by
ones that fail the test if called. The rows' ``before`` says what happened before issue 10.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import shutil
import struct
import zlib
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import magicface_core
from magicface_core import AUVector, MagicFace
from magicface_core.cli import main
from magicface_core.edit import EditSettings, edit_photo
from magicface_core.faces.toolkit import FaceToolkit
from magicface_core.imaging import load_image, to_rgb_uint8
from magicface_core.model import sd15 as sd15_module
from tests.support.paths import OFFICIAL
from tests.support.factories import TINY, random_inputs, write_published_checkpoint, write_tiny_sd15


# --- the work folder, and what "nothing changed" means -----------------------------------------

def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` (a decompression bomb's header) in a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@dataclass
class Work:
    root: Path
    weights: Path
    sd15: Path
    capsys: pytest.CaptureFixture

    def __post_init__(self):
        portrait = Image.open(OFFICIAL / "00381.png").convert("RGB").resize((64, 64))
        portrait.save(self.root / "photo.png")
        portrait.save(self.root / "photo_1.png")
        Image.open(OFFICIAL / "00381_bg.png").convert("RGB").resize((64, 64)).save(self.root / "cond.png")
        Image.new("RGB", (64, 64), (9, 9, 9)).save(self.root / "edited.png")  # an earlier result
        Image.new("RGB", (64, 64), (7, 7, 7)).save(self.root / "sweep_1.png")
        Image.new("RGB", (1, 1)).save(self.root / "dot.png")
        Image.new("RGB", (8, 8)).save(self.root / "tiny.png")
        png_header_only(self.root / "bomb.png", 20000, 20000)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def cli(self, *argv: str) -> str:
        """Run the CLI; it must exit with 2 and a message (no traceback)."""
        code = main(list(argv))
        err = self.capsys.readouterr().err
        assert code == 2, f"exit code {code}, stderr: {err}"
        assert "Traceback" not in err
        return err

    def edit(self, *extra: str, image: str = "photo.png", out: str = "out.png") -> str:
        return self.cli("edit", "--image", self.path(image), "--condition", self.path("cond.png"),
                        "--weights", str(self.weights), "--sd15", str(self.sd15), "--device", "cpu",
                        "--out", self.path(out), *extra)


def raises(error: str, call: Callable[[], object]) -> str:
    """``call`` must raise a MagicFaceError subclass named ``error``; its message."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the class is checked by name: the node pack has its own copies
        names = {c.__name__ for c in type(exc).__mro__}
        assert {"MagicFaceError", error} <= names, f"{type(exc).__name__}: {exc}"
        return str(exc)
    raise AssertionError(f"no {error} raised")


@pytest.fixture(scope="module")
def sd15_folder(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15"))


@pytest.fixture()
def work(tmp_path, tiny_checkpoint, sd15_folder, capsys):
    root = tmp_path / "work"
    root.mkdir()
    return Work(root, tiny_checkpoint, sd15_folder, capsys)


def no_loading(monkeypatch, *packages) -> None:
    """Fail the test if any model or face network starts loading."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad setting was refused")

    for core in (magicface_core, *packages):
        module = lambda name: importlib.import_module(f"{core.__name__}.{name}")  # noqa: E731
        monkeypatch.setattr(module("model.magicface").MagicFace, "from_pretrained", loaded)
        monkeypatch.setattr(module("model.sd15"), "load_sd15", loaded)
        monkeypatch.setattr(module("faces.toolkit").FaceToolkit, "_weight", loaded)


# --- the matrix ------------------------------------------------------------------------------

@dataclass
class Row:
    id: str
    before: str
    act: Callable[[Work], str]
    words: tuple[str, ...]


CPU_ONLY = not torch.cuda.is_available()

ROWS = [
    # 1. Nothing overwritten unless asked.
    Row("edit --out is the --image", "the photo was replaced by the edit",
        lambda w: w.edit(out="sub/../photo.png"), ("is the input", "photo.png", "Choose another --out")),
    Row("edit --out is the --condition", "the condition image was replaced",
        lambda w: w.edit(out="cond.png"), ("is the input", "cond.png")),
    Row("edit --out exists", "the earlier result was replaced without a word",
        lambda w: w.edit(out="edited.png"), ("already exists", "--overwrite")),
    Row("variant name _1 is the input", "photo_1.png (the input) was replaced by variant 1",
        lambda w: w.edit("--variant", "AU12=2", "--variant", "AU12=-2", image="photo_1.png", out="photo.png"),
        ("photo_1.png", "is the input")),
    Row("variant name _1 exists", "sweep_1.png was replaced",
        lambda w: w.edit("--variant", "AU12=2", "--variant", "AU12=-2", out="sweep.png"),
        ("sweep_1.png", "already exists", "--overwrite")),
    Row("condition --out is the --image", "the portrait was replaced by its condition image",
        lambda w: w.cli("condition", "--image", w.path("photo.png"), "--out", w.path("photo.png")), ("is the input",)),
    Row("condition --out exists", "replaced",
        lambda w: w.cli("condition", "--image", w.path("photo.png"), "--out", w.path("edited.png")),
        ("already exists", "--overwrite")),
    Row("convert target is the source", "the weights were rewritten in place",
        lambda w: w.cli("convert", str(w.weights), str(w.weights)), ("is the input", "target")),
    Row("convert target exists", "replaced",
        lambda w: w.cli("convert", str(w.weights), w.path("edited.png")), ("already exists", "--overwrite")),
    # 2./3. Every setting checked before any model loads.
    Row("--steps 0", "refused only after all models had loaded", lambda w: w.edit("--steps", "0"),
        ("steps must be from 1 to 999", "uni_pc")),
    Row("--steps 100000", "accepted: 21 steps after 3 minutes", lambda w: w.edit("--steps", "100000"),
        ("steps must be from 1 to 999",)),
    Row("--steps 1000 uni_pc", "NaN latents, a black image, exit 0", lambda w: w.edit("--steps", "1000"),
        ("from 1 to 999", "uni_pc")),
    Row("--steps 1000 dpmpp_2m", "NaN latents, a black image, exit 0",
        lambda w: w.edit("--steps", "1000", "--sampler", "dpmpp_2m"), ("from 1 to 999", "dpmpp_2m")),
    Row("--steps 1000 ddim", "IndexError traceback at the last step",
        lambda w: w.edit("--steps", "1000", "--sampler", "ddim"), ("from 1 to 999", "ddim")),
    Row("--guidance nan", "a black image, exit 0", lambda w: w.edit("--guidance", "nan"),
        ("guidance must be a finite number",)),
    Row("--guidance 1e30", "a black image, exit 0", lambda w: w.edit("--guidance", "1e30"),
        ("guidance must be a finite number within +-100",)),
    Row("--au AU12=3e38", "a black image, exit 0", lambda w: w.edit("--au", "AU12=3e38"),
        ("far outside", "+-10")),
    Row("--au AU12=1e999", "refused (kept)", lambda w: w.edit("--au", "AU12=1e999"), ("must be finite",)),
    Row("--seed -1", "accepted silently (taken modulo 2**64)", lambda w: w.edit("--seed", "-1"),
        ("seed must be a whole number from 0",)),
    Row("--face-index -1", "silently took the smallest face", lambda w: w.edit("--crop", "--face-index", "-1"),
        ("face index must be 0",)),
    Row("--device gpu", "RuntimeError traceback from torch.device", lambda w: w.edit("--device", "gpu"),
        ("unknown device 'gpu'", "cpu, cuda")),
    pytest.param(Row("--device cuda without a GPU", "traceback while loading the weights",
                     lambda w: w.edit("--device", "cuda"), ("no CUDA GPU", "--device cpu")),
                 marks=pytest.mark.skipif(not CPU_ONLY, reason="this machine has a GPU")),
    Row("--out x.txt", "refused only after the whole edit (PIL's unknown extension)",
        lambda w: w.edit(out="x.txt"), ("not an image format", ".png")),
    Row("estimate --face-index -1", "silently took the smallest face",
        lambda w: w.cli("estimate", "--image", w.path("photo.png"), "--face-index", "-1"), ("face index must be 0",)),
    # 4. Photos.
    Row("estimate on a 1x1 image", "convolution error traceback",
        lambda w: w.cli("estimate", "--image", w.path("dot.png")), ("1x1", "at least 32x32")),
    Row("estimate on an 8x8 image", "convolution error traceback",
        lambda w: w.cli("estimate", "--image", w.path("tiny.png")), ("8x8", "at least 32x32")),
    Row("condition on an 8x8 image", "convolution error traceback in parsing",
        lambda w: w.cli("condition", "--image", w.path("tiny.png"), "--out", w.path("c.png")), ("at least 32x32",)),
    Row("edit a 20000x20000 PNG", "PIL's raw DecompressionBombError",
        lambda w: w.edit(image="bomb.png"), ("400,000,000 pixels, over the limit of 89,478,485 pixels", "MAGICFACE_MAX_PIXELS")),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id if isinstance(r, Row) else None)
def test_cli_refuses_before_loading_and_writes_nothing(row, work, monkeypatch):
    no_loading(monkeypatch)
    before = snapshot(work.root)
    message = row.act(work)
    for word in row.words:
        assert word in message, f"{word!r} not in {message!r}"
    assert snapshot(work.root) == before


def test_overwrite_replaces_an_output_but_never_an_input(work):
    base = ["edit", "--image", work.path("photo.png"), "--condition", work.path("cond.png"), "--au", "AU12=2",
            "--weights", str(work.weights), "--sd15", str(work.sd15), "--device", "cpu", "--steps", "1"]
    before = snapshot(work.root)
    assert main([*base, "--out", work.path("edited.png"), "--overwrite"]) == 0
    after = snapshot(work.root)
    assert after["edited.png"] != before["edited.png"]
    assert {k: v for k, v in after.items() if k != "edited.png"} == {k: v for k, v in before.items() if k != "edited.png"}
    assert not list(work.root.glob("*.partial")) and not list(work.root.glob(".*"))
    assert main([*base, "--out", work.path("photo.png"), "--overwrite"]) == 2  # --overwrite never covers the input


# --- damaged weights and non-finite results: an error, never a black image ---------------------

@pytest.fixture(scope="module")
def damaged_checkpoints(tmp_path_factory, tiny_parts):
    root = tmp_path_factory.mktemp("damaged")
    nan = {part: (config, dict(state)) for part, (config, state) in tiny_parts.items()}
    nan["denoising_unet"][1]["conv_in.weight"] = nan["denoising_unet"][1]["conv_in.weight"].clone()
    nan["denoising_unet"][1]["conv_in.weight"][0, 0, 0, 0] = float("nan")
    big = {part: (config, dict(state)) for part, (config, state) in tiny_parts.items()}
    big["ID_enc"][1]["conv_out.bias"] = torch.full_like(big["ID_enc"][1]["conv_out.bias"], 1e5)  # > fp16's 65504
    return (write_published_checkpoint(root / "nan", parts=nan), write_published_checkpoint(root / "big", parts=big))


def test_weights_holding_nan_are_refused_by_name(damaged_checkpoints, work):
    nan, big = damaged_checkpoints
    message = raises("CheckpointError", lambda: MagicFace.from_pretrained(nan, "cpu", "fp32"))
    assert "conv_in.weight" in message and "NaN" in message and "download it again" in message
    message = raises("CheckpointError", lambda: MagicFace.from_pretrained(big, "cpu", "fp16"))
    assert "conv_out.bias overflows float16" in message and "fp32 or bf16" in message
    MagicFace.from_pretrained(big, "cpu", "fp32")  # finite in fp32: loads
    before = snapshot(work.root)  # before: loaded silently, then a black image with exit code 0
    work.weights = nan
    assert "conv_in.weight" in work.edit("--steps", "1")
    assert snapshot(work.root) == before


def damaged(model: MagicFace) -> MagicFace:
    """The model with an output bias that became infinite, as after a diverged fine-tune in memory."""
    copy = deepcopy(model)
    copy.denoiser.conv_out.bias.data[0] = float("inf")
    return copy


def test_non_finite_latents_stop_sampling_early_and_save_nothing(tiny_model, work, monkeypatch):
    broken = damaged(tiny_model)
    inputs = random_inputs(TINY)
    features = broken.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    steps_run = []
    message = raises("NonFiniteError", lambda: broken.sample(
        features, inputs["cond_latents"], AUVector.parse("AU12=2"), inputs["text_embeds"], steps=50,
        noise=inputs["noise"], callback=lambda i, n, latents: steps_run.append(i)))
    assert "NaN or infinite latents" in message and "step 10 of 50" in message
    assert "guidance" in message and "AU variations" in message and "damaged weights" in message
    assert steps_run == list(range(1, 10))  # stopped at the first check, not after 50 steps
    # The CLI writes nothing and exits 2 (before: a black image, exit code 0).
    monkeypatch.setattr(MagicFace, "from_pretrained", classmethod(lambda cls, *a, **k: broken))
    before = snapshot(work.root)
    assert "NaN or infinite latents" in work.edit("--steps", "2", "--au", "AU12=2")
    assert snapshot(work.root) == before


def test_the_decoded_image_is_checked_too(sd15_folder):
    parts = sd15_module.load_sd15(sd15_folder, "cpu", torch.float32)
    latents = torch.zeros(1, 4, 8, 8)
    latents[0, 0, 0, 0] = float("nan")
    assert "latents already held NaN" in raises("NonFiniteError", lambda: sd15_module.vae_decode(parts.vae, latents))


# --- the Python API ---------------------------------------------------------------------------

API_ROWS = [
    ("steps=1.5", "TypeError: 'float' object cannot be interpreted as an integer", "SettingsError",
     lambda m, x, f: m.sample(f, x["cond_latents"], AUVector.zeros(), x["text_embeds"], steps=1.5),
     ("whole number", "1.5")),
    ("steps=True", "ran one step", "SettingsError",
     lambda m, x, f: m.sample(f, x["cond_latents"], AUVector.zeros(), x["text_embeds"], steps=True), ("whole number",)),
    ("text width 768 on a 32-wide model", "RuntimeError: mat1 and mat2 shapes cannot be multiplied", "ImageInputError",
     lambda m, x, f: m.sample(f, x["cond_latents"], AUVector.zeros(), torch.zeros(1, 77, 768)),
     ("text_embeds must be [B, 77, 32]", "(1, 77, 768)")),
    ("text width wrong in encode_identity", "RuntimeError: mat1 and mat2 shapes cannot be multiplied", "ImageInputError",
     lambda m, x, f: m.encode_identity(x["id_latents"], torch.zeros(1, 77, 768)), ("[B, 77, 32]",)),
    ("au_delta as a dict with an unknown AU", "TypeError: must be real number, not dict", "AUInputError",
     lambda m, x, f: m.sample(f, x["cond_latents"], {"AU13": 3}, x["text_embeds"]),
     ("unknown action unit 'AU13'", "AU12")),
    ("au_delta as text with a typo", "TypeError: new(): invalid data type 'str'", "AUInputError",
     lambda m, x, f: m.sample(f, x["cond_latents"], "AU12=lots", x["text_embeds"]), ("cannot read AU setting",)),
    ("au_delta as a list of strings", "TypeError from torch", "AUInputError",
     lambda m, x, f: m.sample(f, x["cond_latents"], ["AU12=3"], x["text_embeds"]), ("12 numbers per row",)),
    ("au_delta of 11 values", "refused (kept)", "AUInputError",
     lambda m, x, f: m.sample(f, x["cond_latents"], [0.0] * 11, x["text_embeds"]), ("12 values",)),
    ("guidance=nan", "NaN latents returned without a word", "SettingsError",
     lambda m, x, f: m.sample(f, x["cond_latents"], AUVector.zeros(), x["text_embeds"], guidance=float("nan")),
     ("finite",)),
    ("seed=-1", "accepted silently (modulo 2**64)", "SettingsError",
     lambda m, x, f: m.sample(f, x["cond_latents"], AUVector.zeros(), x["text_embeds"], seed=-1), ("seed",)),
    ("AU value 1e6", "accepted (in fp16: inf, a black image)", "AUInputError",
     lambda m, x, f: m.sample(f, x["cond_latents"], AUVector.parse("AU12=1e6"), x["text_embeds"]), ("far outside",)),
    ("sampler 'unipc'", "refused (kept)", "SettingsError",
     lambda m, x, f: m.sample(f, x["cond_latents"], AUVector.zeros(), x["text_embeds"], sampler="unipc"),
     ("unknown sampler", "uni_pc")),
    ("edit_photo face_index=-1", "silently took the smallest face", "SettingsError",
     lambda m, x, f: edit_photo(np.zeros((64, 64, 3), np.uint8), AUVector.zeros(), None, None, crop=True,
                                face_index=-1, condition=np.zeros((64, 64, 3), np.uint8)), ("face index must be 0",)),
    ("EditSettings(steps=1.5)", "accepted; TypeError later in the scheduler", "SettingsError",
     lambda m, x, f: EditSettings(steps=1.5), ("whole number",)),
    ("EditSettings(steps=5000, sampler='euler')", "accepted: hours of sampling", "SettingsError",
     lambda m, x, f: EditSettings(steps=5000, sampler="euler"), ("from 1 to 1000", "euler")),
]


@pytest.mark.parametrize("name, before, error, call, words", API_ROWS, ids=[r[0] for r in API_ROWS])
def test_api_messages(tiny_model, name, before, error, call, words):
    inputs = random_inputs(TINY)
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    message = raises(error, lambda: call(tiny_model, inputs, features))
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# --- photos decoded as they display ------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:, :8] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", what phones write for a portrait shot
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "phone.jpg")  # before: 64 wide and 40 high, sideways
    assert loaded.shape == (64, 40, 3)
    assert loaded[:8].mean() > 200 and loaded[16:].mean() < 20  # the band is on top once displayed


def test_a_crop_edit_keeps_the_displayed_orientation(tiny_checkpoint, sd15_folder, tmp_path, monkeypatch):
    displayed = np.asarray(Image.open(OFFICIAL / "00512.png").convert("RGB").resize((160, 160)))
    displayed = np.pad(displayed, ((20, 60), (10, 30), (0, 0)), constant_values=120)  # 200 wide, 240 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(displayed, k=1)).save(tmp_path / "phone.jpg", exif=exif, quality=95)  # stored sideways
    boxes, detect = [], FaceToolkit.detect
    monkeypatch.setattr(FaceToolkit, "detect", lambda self, image: boxes.append(image.shape) or detect(self, image))
    out = tmp_path / "edited.png"
    # dlib: real detection and landmarks (the crop is framed from them), nothing to download.
    assert main(["edit", "--image", str(tmp_path / "phone.jpg"), "--crop", "--detector", "dlib", "--au", "AU12=2",
                 "--steps", "1",
                 "--weights", str(tiny_checkpoint), "--sd15", str(sd15_folder), "--device", "cpu",
                 "--condition", str(OFFICIAL / "00381_bg.png"), "--out", str(out)]) == 0
    assert boxes[0][:2] == (240, 200)  # the detector saw the upright photo
    result, upright = np.asarray(Image.open(out)), load_image(tmp_path / "phone.jpg")
    assert result.shape == (240, 200, 3)  # before: 240 wide, sideways
    assert np.abs(upright.astype(int) - displayed).mean() < 3  # JPEG's error only
    assert np.array_equal(result[:12], upright[:12])  # outside the crop: the photo itself, upright


def test_16_bit_and_float_images_are_scaled(tmp_path):
    Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    assert load_image(tmp_path / "gray16.png")[0, 0].tolist() == [128] * 3  # before: 255 (white)
    Image.fromarray(np.full((40, 40), 0.5, np.float32)).save(tmp_path / "float.tif")
    assert load_image(tmp_path / "float.tif")[0, 0].tolist() == [128] * 3  # before: 0 (black)
    assert to_rgb_uint8(np.full((4, 4, 3), 65535, np.uint16))[0, 0].tolist() == [255] * 3  # before: 255 by clipping
    with pytest.raises(magicface_core.ImageInputError, match="uint8 .0..255., uint16"):
        to_rgb_uint8(np.full((4, 4, 3), 3, np.int64))  # before: 3 * 255 clipped to white
    with pytest.raises(magicface_core.ImageInputError, match="NaN"):
        to_rgb_uint8(np.full((4, 4, 3), np.nan, np.float32))


def test_one_alpha_rule_for_files_and_arrays(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    rgba[20:, :, 3] = 255  # the bottom half opaque
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    from_file, from_array = load_image(tmp_path / "rgba.png"), to_rgb_uint8(rgba)
    assert np.array_equal(from_file, from_array)  # before: the file kept the hidden red, the array went white
    assert from_file[0, 0].tolist() == [255, 255, 255] and from_file[-1, -1].tolist() == [255, 0, 0]
    gray_alpha = Image.fromarray(rgba[..., 0]).convert("LA")
    gray_alpha.putalpha(Image.fromarray(rgba[..., 3]))
    gray_alpha.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png")[0, 0].tolist() == [255] * 3


def test_the_pixel_limit_can_be_raised(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "photo.png")
    monkeypatch.setenv("MAGICFACE_MAX_PIXELS", "5000")
    with pytest.raises(magicface_core.ImageInputError, match="100x100 = 10,000 pixels, over the limit of 5,000"):
        load_image(tmp_path / "photo.png")
    assert load_image(tmp_path / "photo.png", max_pixels=10_000).shape == (100, 100, 3)
    monkeypatch.setenv("MAGICFACE_MAX_PIXELS", "20000")
    assert load_image(tmp_path / "photo.png").shape == (100, 100, 3)


def test_small_arrays_are_refused_before_the_networks_load(monkeypatch, tmp_path):
    no_loading(monkeypatch)
    toolkit = FaceToolkit(tmp_path)
    for call in (toolkit.detect, toolkit.parse, lambda image: toolkit.estimate_aus([image])):
        with pytest.raises(magicface_core.ImageInputError, match="8x8 pixels; MagicFace needs images at least 32x32"):
            call(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(magicface_core.ImageInputError, match="empty"):
        toolkit.estimate_aus([])


# --- the nodes --------------------------------------------------------------------------------

def _node(pack, key):
    cls = pack.NODE_CLASS_MAPPINGS[key]
    return getattr(cls(), cls.FUNCTION)


NODE_ROWS = [
    ("Face Crop, empty batch", "ValueError: not enough values to unpack",
     lambda p: _node(p, "MagicFaceFaceCrop")(image=torch.zeros(0, 64, 64, 3), face_index=0), "ImageInputError",
     ("the image is an empty batch",)),
    ("Face Parse, empty batch", "ValueError: not enough values to unpack",
     lambda p: _node(p, "MagicFaceFaceParseContour")(image=torch.zeros(0, 512, 512, 3), parser="bisenet"),
     "ImageInputError", ("empty batch",)),
    ("AU Estimate, empty batch", "started loading (downloading) the AU network",
     lambda p: _node(p, "MagicFaceAUEstimate")(image=torch.zeros(0, 64, 64, 3), face_index=0), "ImageInputError",
     ("empty batch",)),
    ("ID Encoder, empty batch", "ran the VAE on an empty batch",
     lambda p: _node(p, "MagicFaceIDEncoder")(magicface_model=None, image=torch.zeros(0, 512, 512, 3), vae=None,
                                               conditioning=None), "ImageInputError", ("the identity image is an empty batch",)),
    ("Face Crop, face_index -1", "silently took the smallest face",
     lambda p: _node(p, "MagicFaceFaceCrop")(image=torch.zeros(1, 64, 64, 3), face_index=-1), "SettingsError",
     ("face index must be 0",)),
    ("AU Sweep, step 0", "ZeroDivisionError",
     lambda p: _node(p, "MagicFaceAUSweep")(au="AU12", start=-2.0, stop=2.0, step=0.0), "AUInputError",
     ("step must be a positive number",)),
    ("AU Sweep, step nan", "ValueError: cannot convert float NaN to integer",
     lambda p: _node(p, "MagicFaceAUSweep")(au="AU12", start=-2.0, stop=2.0, step=float("nan")), "AUInputError",
     ("positive number",)),
    ("Paste Back without a crop", "TypeError: object of type 'NoneType' has no len()",
     lambda p: _node(p, "MagicFacePasteBack")(original=torch.zeros(1, 64, 64, 3), edited=torch.zeros(1, 512, 512, 3),
                                              crop=None, keep_detail=True), "ImageInputError",
     ("needs the crop output", "Face Crop")),
    ("KSampler, steps 1.5", "TypeError in the scheduler, after the VAE and denoiser ran/loaded",
     lambda p: _node(p, "MagicFaceKSampler")(magicface_model=None, identity=None, condition=None, vae=None,
                                             au_delta=p.magicface_core.AUVector.zeros(), conditioning=None, seed=0,
                                             steps=1.5, au_guidance=3.0, sampler="uni_pc"), "SettingsError",
     ("whole number",)),
    ("KSampler, a dict with an unknown AU as au_delta", "TypeError from torch, after the VAE and denoiser ran/loaded",
     lambda p: _node(p, "MagicFaceKSampler")(magicface_model=None, identity=None, condition=None, vae=None,
                                             au_delta={"AU3": 2}, conditioning=None, seed=0, steps=20,
                                             au_guidance=3.0, sampler="uni_pc"), "AUInputError",
     ("unknown action unit 'AU3'",)),
]


@pytest.mark.parametrize("name, before, call, error, words", NODE_ROWS, ids=[r[0] for r in NODE_ROWS])
def test_node_messages(pack, monkeypatch, tmp_path, name, before, call, error, words):
    monkeypatch.setenv("MAGICFACE_MODELS", str(tmp_path))
    no_loading(monkeypatch, pack.magicface_core)
    message = raises(error, lambda: call(pack))
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert not any(tmp_path.iterdir())


def test_files_left_by_a_crash_are_not_half_written(tmp_path, monkeypatch):
    """An exception while writing leaves the old file and no temporary behind."""
    from magicface_core.imaging import save_image

    target = tmp_path / "edited.png"
    shutil.copy(OFFICIAL / "00381_bg.png", target)
    before = snapshot(tmp_path)

    save = Image.Image.save

    def crash(self, fp, *args, **kwargs):
        if isinstance(fp, io.BytesIO):  # the format check's trial encoding
            return save(self, fp, *args, **kwargs)
        Path(fp).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_image(np.zeros((8, 8, 3), np.uint8), target)
    assert snapshot(tmp_path) == before


def test_a_dict_or_text_as_au_delta_means_what_it_says(tiny_model):
    """Before: TypeError from torch. A mapping or text reads as AUVector.from_dict / AUVector.parse."""
    inputs = random_inputs(TINY)
    features = tiny_model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    results = [tiny_model.sample(features, inputs["cond_latents"], au, inputs["text_embeds"], steps=2,
                                 noise=inputs["noise"])
               for au in ({"AU12": 3, "AU6": -1}, "AU12=3, AU6=-1", AUVector.from_dict({"AU12": 3, "AU6": -1}))]
    assert torch.equal(results[0], results[2]) and torch.equal(results[1], results[2])


# --- issue 21, node-facing: IMAGE layout and pixel range (the core's check_pixel_batch, called by the nodes) ----

IMAGE_ROWS = [
    ("ID Encoder, a BCHW tensor", "read as a 512x3 image: 'crop the face first'",
     lambda p: _node(p, "MagicFaceIDEncoder")(magicface_model=None, image=torch.zeros(1, 3, 512, 512), vae=None,
                                               conditioning=None), "ImageInputError",
     ("channels-first", "movedim(1, -1)")),
    ("KSampler, a BCHW condition", "read as a 512x3 image: 'crop the face first'",
     lambda p: _node(p, "MagicFaceKSampler")(magicface_model=None, identity=None, condition=torch.zeros(1, 3, 512, 512),
                                             vae=None, au_delta=p.magicface_core.AUVector.zeros(), conditioning=None,
                                             seed=0, steps=20, au_guidance=3.0, sampler="uni_pc"), "ImageInputError",
     ("channels-first", "[B,H,W,C]")),
    ("Face Crop, floats in 0..255", "silently clipped to white",
     lambda p: _node(p, "MagicFaceFaceCrop")(image=torch.full((1, 64, 64, 3), 128.0), face_index=0),
     "ImageInputError", ("0..1", "divide it by 255", "not clipped")),
    ("ID Encoder, floats in -1..1", "silently clipped (the dark half lost)",
     lambda p: _node(p, "MagicFaceIDEncoder")(magicface_model=None, image=torch.linspace(-1, 1, 512 * 512 * 3).view(
         1, 512, 512, 3), vae=None, conditioning=None), "ImageInputError", ("(x + 1) / 2", "0..1")),
]


@pytest.mark.parametrize("name, before, call, error, words", IMAGE_ROWS, ids=[r[0] for r in IMAGE_ROWS])
def test_node_image_messages(pack, monkeypatch, tmp_path, name, before, call, error, words):
    test_node_messages(pack, monkeypatch, tmp_path, name, before, call, error, words)


# --- issue 18, FineFace: every bad input refused (or warned about) before any sampling -----------

def _fineface_weights(tmp_path):
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import compare_fineface_with_authors as parity

    return parity.write_tiny_fineface(tmp_path)


def test_fineface_sd15_model_to_the_sd2_patch_and_reverse():
    from magicface_core.errors import SettingsError
    from magicface_core.fineface.checks import check_base_width

    with pytest.raises(SettingsError, match="SD 1.5 model.*SD 2.1-base"):
        check_base_width(768, sd15_variant=False)
    with pytest.raises(SettingsError, match="SD 2.x model.*SD 1.5"):
        check_base_width(1024, sd15_variant=True)


def test_fineface_aus_outside_0_to_5_warn_and_past_the_limit_refuse(caplog):
    from magicface_core.errors import AUInputError
    from magicface_core.fineface.checks import check_aus

    with caplog.at_level("WARNING"):
        check_aus({"AU12": 7})
    assert "outside 0..5" in caplog.text
    with pytest.raises(AUInputError, match="far outside"):
        check_aus({"AU12": 50})


def test_fineface_missing_file_offline(monkeypatch, tmp_path):
    from magicface_core.assets import resolve_fineface
    from magicface_core.errors import WeightsNotFoundError

    monkeypatch.setenv("MAGICFACE_OFFLINE", "1")
    monkeypatch.setenv("MAGICFACE_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="switched off"):
        resolve_fineface("Tvaranka/fineface")


def test_fineface_pickle_with_code_and_lora_with_unexpected_keys(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from magicface_core.errors import CheckpointError
    from magicface_core.fineface import FineFace

    base, ff = _fineface_weights(tmp_path / "w")
    bad = tmp_path / "bad"
    shutil.copytree(ff, bad)
    torch.save({"x": print}, bad / "attn_processors.ckpt")
    with pytest.raises(CheckpointError, match="weights-only"):
        FineFace.from_pretrained(bad, base=base)
    shutil.copy(ff / "attn_processors.ckpt", bad / "attn_processors.ckpt")
    lora = load_file(str(bad / "pytorch_lora_weights.safetensors"))
    lora["unet.conv_in.lora_A.weight"] = torch.zeros(32, 4)
    save_file(lora, str(bad / "pytorch_lora_weights.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected"):
        FineFace.from_pretrained(bad, base=base)
