"""What each command runs, given its settings dataclass (every setting already checked when it was made).

Each run checks what needs the disk (outputs, input images) before any model loads, then loads and works.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..assets import DownloadJob
from ..edit import EditJob
from ..evaluation.evaluate import EvaluateJob
from ..faces.toolkit import ConditionJob, EstimateJob
from ..fineface.generate import GenerateJob
from ..model.magicface import ConvertJob
from ..training.prepare import PrepareJob
from ..video.edit import AnimateJob, VideoJob


def _face_toolkit(job):
    """The job's face networks on its device (built lazily: nothing loads until first used)."""
    return job.faces.toolkit(job.device.resolve()[0])


def _on_step(i: int, n: int) -> None:
    print(f"\rsampling {i}/{n}", end="" if i < n else "\n", file=sys.stderr, flush=True)


def _progress(done: int, total: int) -> None:
    print(f"\rsampling {done}/{total} frame-steps", end="" if done < total else "\n", file=sys.stderr, flush=True)


def run_edit(job: EditJob) -> list[Path]:
    from ..edit import edit_photo
    from ..files import check_outputs
    from ..imaging import save_image
    from ..model.magicface import MagicFace
    from ..model.sd15 import load_sd15

    # Every setting was checked when the job was made; the outputs and inputs are, before anything loads.
    device, dtype = job.device.resolve()
    outputs = check_outputs(job.outputs, [job.image, job.condition], job.overwrite)
    photo, condition = job.load_inputs()
    model = MagicFace.from_pretrained(job.model.weights, device="cpu" if job.offload else device, dtype=dtype)
    if job.offload:
        model.enable_model_offload(device)
    sd15 = load_sd15(job.model.sd15, device, dtype)
    edited = edit_photo(photo, job.au_delta, model, sd15, faces=_face_toolkit(job), condition=condition,
                        crop=job.crop, face_index=job.face_index, settings=job.sampling, on_step=_on_step)
    for image, path in zip(edited, outputs):
        save_image(image, path, overwrite=job.overwrite, source=job.image)  # its ICC, EXIF, JPEG quality
        print(f"wrote {path}")
    return outputs


def run_generate(job: GenerateJob) -> list[Path]:
    from ..assets import resolve_fineface
    from ..edit import output_paths
    from ..files import check_outputs
    from ..fineface.generate import generate
    from ..fineface.pipeline import FineFace
    from ..imaging import from_tensor, save_image
    from ..model.sd15 import load_sd15

    device, dtype = job.device.resolve()
    outputs = check_outputs(output_paths(job.out, job.batch), [], job.overwrite)
    folder = resolve_fineface(job.fineface_weights)
    model = FineFace.from_pretrained(folder, base=job.base, device=device, dtype=dtype,
                                     lora_strength=job.settings.lora_strength)
    parts = load_sd15(job.base, device, dtype)
    images = generate(model, parts, job.prompt, job.aus, job.negative_prompt, job.settings, _on_step)
    for image, path in zip(from_tensor(images), outputs):
        save_image(image, path, overwrite=job.overwrite)
        print(f"wrote {path}")
    return outputs


def _video_models(job):
    from ..model.magicface import MagicFace
    from ..model.sd15 import load_sd15

    device, dtype = job.device.resolve()
    return (MagicFace.from_pretrained(job.model.weights, device=device, dtype=dtype),
            load_sd15(job.model.sd15, device, dtype))


def run_video(job: VideoJob) -> None:
    from ..files import check_outputs
    from ..video.edit import check_clip_job, edit_clip
    from ..video.io import VideoFile, write_video

    check_outputs([job.out], [job.video], job.overwrite)
    job.device.resolve()
    clip = VideoFile(job.video)
    check_clip_job(clip, job.out, job.change, reference_frame=job.reference_frame)
    model, sd15 = _video_models(job)
    report, frames = edit_clip(clip, float(clip.info.fps), job.change, model, sd15, _face_toolkit(job), job.clip,
                               job.sampling, reference_frame=job.reference_frame, on_progress=_progress)
    print(report)
    count = write_video(job.out, frames, clip.info.fps, audio_from=job.video, timing=clip, rotation=clip.info.rotation)
    print(f"wrote {job.out} ({count} frames)")


def run_animate(job: AnimateJob) -> None:
    from ..files import check_outputs
    from ..video.edit import animate_portrait, check_clip_job
    from ..video.io import VideoFile, write_video

    check_outputs([job.out], [job.image, job.driving], job.overwrite)
    job.device.resolve()
    photo = job.load_portrait()
    driving = VideoFile(job.driving)
    check_clip_job(driving, job.out, neutral_frame=job.neutral_frame)
    model, sd15 = _video_models(job)
    report, frames = animate_portrait(photo, driving, float(driving.info.fps), model, sd15, _face_toolkit(job),
                                      job.clip, job.sampling, mode=job.mode, neutral_frame=job.neutral_frame,
                                      crop=job.crop, on_progress=_progress)
    print(report)
    count = write_video(job.out, frames, driving.info.fps, audio_from=job.driving, timing=driving)
    print(f"wrote {job.out} ({count} frames)")


def run_estimate(job: EstimateJob) -> None:
    from ..imaging import load_image

    images = [load_image(p) for p in job.image]
    aus = _face_toolkit(job).estimate_aus(images, job.face_index)
    print(aus.table(title="AU intensities (0..5); columns: " + ", ".join(f"#{i} {p}" for i, p in enumerate(job.image))))


def run_condition(job: ConditionJob) -> None:
    from ..files import check_outputs
    from ..imaging import as_portrait, check_image_format, load_image, save_image

    check_image_format(job.out)
    check_outputs([job.out], [job.image], job.overwrite)
    portrait = as_portrait(load_image(job.image))
    condition, _ = _face_toolkit(job).condition(portrait)
    save_image(condition, job.out, overwrite=job.overwrite)
    print(f"wrote {job.out}")


def run_convert(job: ConvertJob) -> None:
    from ..devices import DTYPES
    from ..files import check_outputs
    from ..model.magicface import MagicFace

    source = Path(job.source)
    check_outputs([job.target], [source, *(source.rglob("*") if source.is_dir() else ())], job.overwrite,
                  option="target")
    model = MagicFace.from_pretrained(job.source, device="cpu", dtype="fp32")
    model.save_pretrained(job.target, single_file=job.target.suffix == ".safetensors", dtype=DTYPES[job.dtype])
    print(f"wrote {job.target}")


def run_download(job: DownloadJob) -> None:
    from .. import assets

    root = job.to or assets.cache_dir()
    print(f"MagicFace: {assets.fetch_magicface(root=root)}")
    print(f"Stable Diffusion 1.5: {assets.fetch_sd15(root=root, with_unet=job.training)}")
    for spec in assets.ALL_FILES:
        print(f"{spec.filename}: {assets.ensure_weight(spec, assets.preprocessing_dir(root))}")


def run_prepare(job: PrepareJob) -> None:
    from ..training.prepare import run

    run(job, _face_toolkit(job))  # the settings were checked when the job was made, before the networks load


def run_evaluate(job: EvaluateJob) -> None:
    from ..evaluation.evaluate import run

    device, dtype = job.device.resolve()
    run(job, _face_toolkit(job), device, dtype)


def run_train(argv: list[str]) -> None:
    from ..training.loop import train
    from .train import load_config

    print(f"wrote {train(load_config(argv))}")
