"""Data preparation, the training loop on a tiny model, resume after a kill, and the written checkpoint."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magicface_core import AUVector, MagicFace
from magicface_core.errors import SettingsError
from magicface_core.cli.train import load_config
from magicface_core.training.config import TrainConfig
from magicface_core.training.dataset import Frame, Pair, PairDataset, apply_au_rules, read_index, write_index
from tests.support.paths import OFFICIAL, REPO
from tests.support.factories import TINY, random_inputs, write_tiny_sd15

RESOLUTION = 64


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; each training run here is a new "process"."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15"), with_unet=True)


def make_dataset(root: Path, clips: int = 2, frames_per_clip: int = 3, seed: int = 0) -> Path:
    """A prepared training set made directly: portraits cut from the official examples, random AUs."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(OFFICIAL / n).convert("RGB") for n in ("00025.png", "00381.png", "00512.png")]
    frames = []
    for c in range(clips):
        for f in range(frames_per_clip):
            image = sources[(c + f) % 3].rotate(5 * f).resize((RESOLUTION, RESOLUTION))
            condition = Image.fromarray((np.asarray(image) * (rng.random() > 0.5)).astype(np.uint8))
            folder = root / "clips" / f"clip{c}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{f:06d}.png")
            condition.save(folder / f"{f:06d}_cond.png")
            frames.append(Frame(f"clip{c}", f * 40, f"clips/clip{c}/{f:06d}.png", f"clips/clip{c}/{f:06d}_cond.png",
                                tuple(rng.uniform(0, 5, 12).round(2))))
    pairs = [Pair(a, b) for a in range(len(frames)) for b in range(len(frames))
             if a != b and frames[a].clip == frames[b].clip]
    write_index(root, frames, pairs, {})
    return root


def tiny_config(data: Path, sd15: Path, output: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), sd15=str(sd15), output_dir=str(output), resolution=RESOLUTION, batch_size=2,
                    learning_rate=1e-4, max_steps=3, checkpoint_every=1000, validate_every=0, log_every=1,
                    num_workers=0, save_dtype="fp32", validation_steps=2)
    settings.update(overrides)
    return TrainConfig(**settings)


def losses(output: Path) -> dict[int, float]:
    with open(output / "train_log.csv") as handle:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(handle)}


def test_au_rules_follow_the_paper():
    generator = torch.Generator().manual_seed(0)
    delta = torch.zeros(40_000, 12)
    delta[20_000:] = torch.rand(20_000, 12) * 4 + 0.5  # genuine changes
    out = apply_au_rules(delta, generator, dropout=0.1, noise_std=0.2, no_change_threshold=0.0)
    dropped = (out == 0).all(dim=1)
    assert abs(float(dropped.float().mean()) - 0.1) < 0.01
    changed = ~dropped[20_000:]
    assert torch.equal(out[20_000:][changed], delta[20_000:][changed])  # real changes pass through
    noised = out[:20_000][~dropped[:20_000]]
    assert abs(float(noised.std()) - 0.2) < 0.01 and abs(float(noised.mean())) < 0.01


def test_config_from_yaml_and_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("learning_rate: 0.0003\nuse_ema: true\nvalidation_deltas: ['AU12=1']\n")
    config = load_config(["--config", str(tmp_path / "c.yaml"), "--data", "d", "--max-steps", "7"])
    assert config.learning_rate == 3e-4 and config.use_ema and config.max_steps == 7
    assert config.validation_deltas == ["AU12=1"] and config.au_dropout == 0.1  # paper default kept
    (tmp_path / "bad.yaml").write_text("learnin_rate: 1\n")
    with pytest.raises(SettingsError, match="learnin_rate"):
        load_config(["--config", str(tmp_path / "bad.yaml"), "--data", "d"])


def test_sd15_initialisation_starts_as_sd15(sd15):
    from diffusers import UNet2DConditionModel

    from magicface_core.training.sd15_init import magicface_from_sd15

    unet = UNet2DConditionModel.from_pretrained(sd15, subfolder="unet")
    model = magicface_from_sd15(unet)
    assert model.denoiser.conv_in.in_channels == 8
    assert torch.equal(model.denoiser.conv_in.weight[:, :4], unet.conv_in.weight)
    assert model.denoiser.conv_in.weight[:, 4:].abs().max() == 0
    assert model.denoiser.class_embedding.weight.abs().max() == 0
    sd = unet.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in model.id_encoder.state_dict().items())


def test_training_module_uses_every_weight_it_holds_and_export_keeps_the_encoder_tail(sd15):
    """What DistributedDataParallel needs (every parameter reaches the output, without hooks across
    modules), the same numbers as the inference path, and the published layout on export."""
    from diffusers import UNet2DConditionModel

    from magicface_core.model.checkpoint import ID_ENCODER
    from magicface_core.training.module import MagicFaceTrainingModule
    from magicface_core.training.sd15_init import magicface_from_sd15

    base = UNet2DConditionModel.from_pretrained(sd15, subfolder="unet")
    magicface = magicface_from_sd15(base)
    last = "up_blocks.1.attentions.1.transformer_blocks.0."
    assert magicface.recorder.unused_modules() == [
        *(last + n for n in ("norm1", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "norm2",
                             "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "norm3", "ff.net.0.proj",
                             "ff.net.2")),
        "up_blocks.1.attentions.1.proj_out", "conv_norm_out", "conv_out"]
    module = MagicFaceTrainingModule(magicface)
    generator = torch.Generator().manual_seed(0)
    latents = lambda: torch.randn(2, 4, 8, 8, generator=generator)  # noqa: E731
    batch = {"id_latents": latents(), "cond_latents": latents(), "noisy": latents(),
             "timesteps": torch.tensor([10, 500]),
             "au": torch.randn(2, 12, generator=generator), "text": torch.randn(2, 77, 32, generator=generator)}
    with torch.no_grad():  # the denoiser's AU projection and condition channels start at zero: give them weight
        magicface.denoiser.class_embedding.weight.normal_(generator=generator)
        magicface.denoiser.conv_in.weight.normal_(generator=generator)
    prediction = module(batch)
    with torch.no_grad():
        features = magicface.encode_identity(batch["id_latents"], batch["text"])
        reference = magicface.denoiser(torch.cat([batch["noisy"], batch["cond_latents"]], dim=1), batch["timesteps"],
                                       encoder_hidden_states=batch["text"], class_labels=batch["au"],
                                       **magicface.injection.call_kwargs(features)).sample
    assert torch.allclose(prediction, reference, atol=1e-6, rtol=1e-5)
    prediction.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    with torch.no_grad():
        for p in module.parameters():
            p.sub_(1e-3 * p.grad.sign())
    exported = magicface.checkpoint_parts()[ID_ENCODER].state_dict
    original = base.state_dict()
    assert set(exported) == set(original)  # the published layout, tail included
    tail = {k for k in original
            if k.startswith((last, "up_blocks.1.attentions.1.proj_out", "conv_norm_out", "conv_out"))}
    assert len(tail) == 26 and all(torch.equal(exported[k], original[k]) for k in tail)  # as in the base weights
    assert not any(torch.equal(exported[k], original[k]) for k in set(original) - tail)  # the rest trained


def test_training_runs_validates_and_its_checkpoint_edits(tmp_path, sd15, pack, monkeypatch):
    from magicface_core.training.loop import train

    data = make_dataset(tmp_path / "data")
    output = tmp_path / "out"
    final = train(tiny_config(data, sd15, output, max_steps=3, checkpoint_every=2, validate_every=3))
    assert all(np.isfinite(list(losses(output).values()))) and len(losses(output)) == 3
    assert (output / "checkpoints" / "step-0000002" / "magicface.safetensors").is_file()
    assert Image.open(output / "validation" / "step-0000003.png").size == (RESOLUTION * 4, RESOLUTION * 2)
    model = MagicFace.from_pretrained(final, device="cpu")
    inputs = random_inputs(TINY)
    features = model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    out = model.sample(features, inputs["cond_latents"], AUVector.from_dict({"AU12": 2}), inputs["text_embeds"], steps=2)
    assert torch.isfinite(out).all()
    # The export is exactly the weights of the last step's checkpoint.
    from safetensors.torch import load_file

    last = load_file(str(output / "checkpoints" / "step-0000003" / "magicface.safetensors"))
    exported = load_file(str(final))
    assert exported.keys() == last.keys() and all(torch.equal(exported[k], last[k]) for k in last)
    # The node pack's loader finds and loads it.
    monkeypatch.setenv("MAGICFACE_MODELS", str(output))
    loader = pack.NODE_CLASS_MAPPINGS["MagicFaceModelLoader"]
    assert "magicface.safetensors" in loader.INPUT_TYPES()["required"]["weights"][1]["options"]
    (loaded,) = loader.execute("magicface.safetensors", "fp32").result
    assert loaded.model.denoiser.conv_in.in_channels == 8


def test_ema_checkpointing_and_mixed_precision_paths_run(tmp_path, sd15):
    from magicface_core.training.loop import train

    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    train(tiny_config(data, sd15, output, max_steps=2, use_ema=True, gradient_checkpointing=True,
                      mixed_precision="bf16", gradient_accumulation_steps=2, checkpoint_every=2))
    assert all(np.isfinite(list(losses(output).values())))
    assert (output / "checkpoints" / "step-0000002").is_dir()


def test_resume_after_a_kill_continues_like_an_uninterrupted_run(tmp_path, sd15):
    from magicface_core.training.loop import train

    data = make_dataset(tmp_path / "data")
    straight = tmp_path / "straight"
    train(tiny_config(data, sd15, straight, max_steps=6, checkpoint_every=2))

    killed = tmp_path / "killed"
    flags = ["--data", str(data), "--sd15", str(sd15), "--output-dir", str(killed), "--resolution", str(RESOLUTION),
             "--batch-size", "2", "--learning-rate", "1e-4", "--max-steps", "1000", "--checkpoint-every", "2",
             "--validate-every", "0", "--log-every", "1", "--num-workers", "0", "--save-dtype", "fp32"]
    process = subprocess.Popen([sys.executable, "-m", "magicface_core", "train", *flags], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-0000004").is_dir():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    train(tiny_config(data, sd15, killed, max_steps=6, checkpoint_every=2, resume="latest"))
    before, after = losses(straight), losses(killed)
    for step in (5, 6):
        assert after[step] == pytest.approx(before[step], rel=1e-5, abs=1e-7)


def test_loss_falls_on_one_repeated_batch(tmp_path, sd15):
    from magicface_core.training.loop import train

    data = make_dataset(tmp_path / "data", clips=1, frames_per_clip=2)
    frames, pairs = read_index(data)
    write_index(data, frames, pairs[:1], {})  # one pair, seen at every step
    output = tmp_path / "out"
    train(tiny_config(data, sd15, output, batch_size=1, learning_rate=2e-3, max_steps=200, au_dropout=0.0))
    values = [v for _, v in sorted(losses(output).items())]
    assert np.mean(values[-20:]) < 0.5 * np.mean(values[:10]), (np.mean(values[:10]), np.mean(values[-20:]))


def test_prepare_builds_pairs_skips_bad_input_and_resumes(tmp_path, face_weights, pack, monkeypatch):
    import cv2

    from magicface_core.faces.toolkit import FaceToolkit
    from magicface_core.faces.landmarks import FaceBox
    from magicface_core.training.prepare import Settings, prepare

    videos = tmp_path / "videos"
    videos.mkdir()
    face = np.asarray(Image.open(OFFICIAL / "00381.png").convert("RGB").resize((160, 160)))
    writer = cv2.VideoWriter(str(videos / "talk.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 160))
    for i in range(12):
        frame = np.zeros_like(face) if i in (4, 5) else np.roll(face, i, axis=1)  # two blank frames
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    (videos / "stills").mkdir()
    for i in range(6):
        Image.fromarray(np.roll(face, -i, axis=0)).save(videos / "stills" / f"{i:03d}.png")
    (videos / "broken.mp4").write_bytes(os.urandom(2048))

    calls = []

    def detect(self, image):  # the random detector finds noise; a blank frame has no face
        calls.append(1)
        if image.std() < 1:
            return []
        return [FaceBox(image.shape[1] * 0.27, image.shape[0] * 0.27, image.shape[1] * 0.73, image.shape[0] * 0.8)]

    monkeypatch.setattr(FaceToolkit, "detect", detect)
    toolkit = FaceToolkit(face_weights, "cpu")
    settings = Settings(frame_step=2, max_frames=10, min_gap=4, pairs_per_clip=6, seed=0)
    report = prepare(videos, tmp_path / "data", toolkit, settings)
    assert report.unreadable_clips == ["broken.mp4"] and report.clips == 2
    assert report.frames_without_face == 1  # frame 4 is sampled (every 2nd) and blank; frame 5 is not sampled
    assert report.frames_kept == 5 + 3
    frames, pairs = read_index(tmp_path / "data")
    assert 0 < len(pairs) <= 12
    for pair in pairs:
        a, b = frames[pair.identity], frames[pair.target]
        assert a.clip == b.clip and abs(a.frame - b.frame) >= 4
    dataset = PairDataset(tmp_path / "data", resolution=64)
    item = dataset[0]
    assert item["identity"].shape == (3, 64, 64) and item["au_delta"].shape == (12,)
    stats = json.loads((tmp_path / "data" / "index.json").read_text())["stats"]
    assert stats["frames_without_face"] == 1
    # A second run resumes: finished clips are not processed again.
    calls.clear()
    again = prepare(videos, tmp_path / "data", toolkit, settings)
    assert calls == [] and again.frames_kept == report.frames_kept and again.pairs == report.pairs
