"""``python -m magicface_core``: edit a portrait's expression, and the tools around it.

    python -m magicface_core edit --image portrait.png --au AU12=3 --au AU6=2 --out edited.png
    python -m magicface_core edit --image photo.jpg --crop --au AU1=2,AU4=4 --out edited.jpg
    python -m magicface_core estimate --image portrait.png
    python -m magicface_core condition --image portrait.png --out condition.png
    python -m magicface_core convert WEIGHTS_DIR magicface_fp16.safetensors --dtype fp16
    python -m magicface_core download
    python -m magicface_core video --video in.mp4 --au AU12=3 [--keyframes "0:AU12=0;30:AU12=3"] --out out.mp4
    python -m magicface_core animate --image portrait.png --driving drive.mp4 [--relative|--absolute] --out out.mp4
    python -m magicface_core prepare|train|evaluate ...   (see each one's --help)

This module is the one place that sets up logging, parses devices and precisions, and turns the
library's :class:`~magicface_core.errors.MagicFaceError` into a message and an exit code.
``python -m magicface_core.train`` (``.prepare``, ``.evaluate``) are aliases of the subcommands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .au import AU_NAMES, AUVector
from .errors import MagicFaceError
from .model.schedulers import SAMPLER_NAMES

logger = logging.getLogger("magicface_core")


EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


def _add_device_args(parser: argparse.ArgumentParser, dtype: bool = True, faces: bool = True) -> None:
    parser.add_argument("--device", default=None, help="cuda, cpu, mps... (default: the GPU if there is one)")
    if dtype:
        parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                            help="precision (default: half on GPU, fp32 on CPU)")
    if faces:
        parser.add_argument("--face-weights", type=Path, default=None,
                            help="folder for the face detection/parsing/AU weights (default: the magicface cache)")
        parser.add_argument("--parser", default="bisenet", choices=["bisenet", "facer"], help="face parsing backend")
        parser.add_argument("--detector", default="face_alignment", choices=["face_alignment", "dlib"],
                            help="face detection + 68 landmarks: face_alignment (S3FD + 2D-FAN, downloaded) or dlib "
                                 "(shipped with face_recognition_models; its 68-point model is for non-commercial use)")
        parser.add_argument("--jaw", default="3dmm", choices=["3dmm", "2d"],
                            help="jaw line of the condition image: 3dmm (the authors' expression-free 3D fit; "
                                 "downloads d3dfr_res50_nofc.pth and BFM_model_front.mat) or 2d (the landmark "
                                 "model's own jaw)")


def _device_and_dtype(args):
    from . import devices, scaleout

    device, dtype = devices.resolve(args.device, getattr(args, "dtype", None))
    return scaleout.process_device(device), dtype  # under torchrun, each process its own GPU


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m magicface_core", description="MagicFace expression editing by AUs")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="edit the expression of a portrait")
    edit.add_argument("--image", type=Path, required=True, help="a 512x512 face crop, or any photo with --crop")
    edit.add_argument("--condition", type=Path, default=None,
                      help="condition image (background + jaw contour); computed from the image when omitted")
    edit.add_argument("--au", action="append", default=[], metavar="AU=VALUE",
                      help=f"an AU variation, e.g. AU12=3 (repeatable, or comma-separated); AUs: {' '.join(AU_NAMES)}")
    edit.add_argument("--variant", action="append", default=[], metavar="SPEC",
                      help="a whole AU setting such as 'AU12=3,AU6=2'; several --variant give a batch of edits")
    edit.add_argument("--out", type=Path, required=True, help="output image (variants get _0, _1, ... suffixes)")
    edit.add_argument("--weights", default="mengtingwei/magicface",
                      help="MagicFace weights: the published folder, one of our .safetensors files, or a hub repo id")
    edit.add_argument("--sd15", default=None, help="Stable Diffusion 1.5 diffusers folder (default: download from the hub)")
    edit.add_argument("--steps", type=int, default=50)
    edit.add_argument("--guidance", type=float, default=3.0, help="AU guidance scale (the paper uses 3.0)")
    edit.add_argument("--seed", type=int, default=0)
    edit.add_argument("--sampler", default="uni_pc", choices=SAMPLER_NAMES)
    edit.add_argument("--crop", action="store_true", help="find the face in a full photo, edit it and paste it back")
    edit.add_argument("--face-index", type=int, default=0, help="which face with --crop (0 = largest)")
    edit.add_argument("--offload", action="store_true",
                      help="low GPU memory: keep the UNets on the CPU and move each to the GPU only while it runs")
    edit.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    _add_device_args(edit)

    estimate = commands.add_parser("estimate", help="print the AU intensities of a face")
    estimate.add_argument("--image", type=Path, required=True, nargs="+")
    estimate.add_argument("--face-index", type=int, default=0)
    _add_device_args(estimate)

    condition = commands.add_parser("condition", help="write the condition image of a 512x512 portrait")
    condition.add_argument("--image", type=Path, required=True)
    condition.add_argument("--out", type=Path, required=True)
    condition.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    _add_device_args(condition)

    convert = commands.add_parser("convert", help="convert MagicFace weights to one .safetensors file (or back)")
    convert.add_argument("source", help="published folder, .safetensors file or hub repo id")
    convert.add_argument("target", type=Path, help="a .safetensors file, or a folder for the published layout")
    convert.add_argument("--dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    convert.add_argument("--overwrite", action="store_true", help="replace the target if it exists")

    generate = commands.add_parser("generate", help="FineFace: a new face from a prompt, with the expression in AUs")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--negative-prompt", default="")
    generate.add_argument("--au", action="append", default=[], metavar="AU=VALUE",
                          help="an absolute AU intensity 0..5, e.g. AU12=4 (repeatable, or comma-separated)")
    generate.add_argument("--base", required=True,
                          help="Stable Diffusion 2.1-base diffusers folder (unet/, scheduler/, vae/, text_encoder/, tokenizer/)")
    generate.add_argument("--fineface-weights", default="Tvaranka/fineface",
                          help="folder with FineFace's three files, or the hub id (downloaded on first use)")
    generate.add_argument("--steps", type=int, default=50)
    generate.add_argument("--guidance", type=float, default=7.5, help="text guidance (the authors use 7.5)")
    generate.add_argument("--au-scale", type=float, default=1.0, help="weight of the AU term")
    generate.add_argument("--lora-strength", type=float, default=1.0,
                          help="1.0 = the trained scale; 0 = the authors' pinned code; 4.0 = diffusers >= 0.29")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--batch", type=int, default=1, help="images from one seed: out_0, out_1, ...")
    generate.add_argument("--out", type=Path, required=True)
    generate.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_device_args(generate, faces=False)

    _add_video_parsers(commands)

    download = commands.add_parser("download", help="download all weights the CLI needs")
    download.add_argument("--to", type=Path, default=None, help="weights folder (default: the magicface cache)")
    download.add_argument("--training", action="store_true", help="also SD 1.5's UNet, which training starts from")

    from .evaluation import evaluate as evaluation
    from .training import prepare as preparation

    prepare = commands.add_parser("prepare", help="build a training set from videos",
                                  description=preparation.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    preparation.add_arguments(prepare)
    _add_device_args(prepare, dtype=False)

    evaluate = commands.add_parser("evaluate", help="the paper's metrics for a set of edits",
                                   description=evaluation.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluation.add_arguments(evaluate)
    _add_device_args(evaluate)

    # The training flags and YAML have their own typed parser: everything after "train" goes to it.
    commands.add_parser("train", help="train MagicFace from SD 1.5 (see train --help)", add_help=False)
    return parser


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default="mengtingwei/magicface",
                        help="MagicFace weights: the published folder, one of our .safetensors files, or a hub repo id")
    parser.add_argument("--sd15", default=None, help="Stable Diffusion 1.5 diffusers folder (default: download from the hub)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=3.0, help="AU guidance scale (the paper uses 3.0)")
    parser.add_argument("--seed", type=int, default=0, help="one start noise for every frame")
    parser.add_argument("--sampler", default="uni_pc", choices=SAMPLER_NAMES)


def _add_video_parsers(commands) -> None:
    video = commands.add_parser("video", help="edit the expression all through a clip (audio kept)")
    video.add_argument("--video", type=Path, required=True)
    video.add_argument("--au", action="append", default=[], metavar="AU=VALUE",
                       help="an AU change added to every frame, e.g. AU12=3 (repeatable, or comma-separated)")
    video.add_argument("--keyframes", default=None, metavar="SPEC",
                       help='keyframed AU changes, e.g. "0:AU12=0;30:AU12=3;60:AU12=0" (frames from 0)')
    video.add_argument("--interpolation", default="linear", choices=["linear", "smooth"])
    video.add_argument("--reference-frame", type=int, default=None,
                       help="the frame whose face gives the identity (default: the first frame with a face)")
    video.add_argument("--out", type=Path, required=True)

    animate = commands.add_parser("animate", help="make a portrait follow the expressions of a driving clip")
    animate.add_argument("--image", type=Path, required=True, help="a 512x512 portrait, or any photo with --crop")
    animate.add_argument("--driving", type=Path, required=True, help="the clip whose expressions to follow")
    mode = animate.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="mode", action="store_const", const="relative",
                      help="delta = driving AUs - driving AUs at the neutral frame (default)")
    mode.add_argument("--absolute", dest="mode", action="store_const", const="absolute",
                      help="delta = driving AUs - the portrait's AUs")
    animate.set_defaults(mode="relative")
    animate.add_argument("--neutral-frame", type=int, default=None,
                         help="with --relative: the driving frame taken as neutral (default: the first with a face)")
    animate.add_argument("--crop", action="store_true", help="find the face in a full photo and paste the result back")
    animate.add_argument("--out", type=Path, required=True)

    for parser in (video, animate):
        _add_generation_args(parser)
        parser.add_argument("--frames-per-chunk", type=int, default=8,
                            help="frames sampled together; memory grows with this, not with the clip")
        parser.add_argument("--detect-every", type=int, default=1, help="run face detection on every N-th frame")
        parser.add_argument("--face-index", type=int, default=0, help="which face to follow (0 = largest)")
        parser.add_argument("--au-cutoff", type=float, default=3.0,
                            help="low-pass cutoff (Hz) for the AU trajectory; 0 turns smoothing off")
        parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        _add_device_args(parser)


def parse_au_delta(au_args: list[str], variants: list[str]) -> AUVector:
    if au_args and variants:
        raise MagicFaceError("use either --au or --variant, not both")
    if variants:
        return AUVector.cat([AUVector.parse(v) for v in variants])
    return AUVector.parse(",".join(au_args))


def _face_toolkit(args):
    from .faces.toolkit import default_toolkit

    return default_toolkit(_device_and_dtype(args)[0], args.parser, args.face_weights, args.detector, args.jaw)


def output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one edit; ``out_0``, ``out_1``, ... for a batch."""
    return [out] if count == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]


def run_edit(args) -> list[Path]:
    from .edit import edit_photo
    from .files import check_outputs
    from .imaging import check_image_format, load_image, save_image
    from .model.magicface import MagicFace
    from .model.sd15 import load_sd15
    from .settings import EditSettings, check_au_delta, check_face_index

    # Every setting and output checked before anything loads.
    au_delta = check_au_delta(parse_au_delta(args.au, args.variant))
    settings = EditSettings(steps=args.steps, guidance=args.guidance, seed=args.seed, sampler=args.sampler)
    check_face_index(args.face_index)
    device, dtype = _device_and_dtype(args)
    check_image_format(args.out)
    outputs = check_outputs(output_paths(args.out, len(au_delta)), [args.image, args.condition], args.overwrite)
    photo = load_image(args.image)
    condition = load_image(args.condition) if args.condition else None
    model = MagicFace.from_pretrained(args.weights, device="cpu" if args.offload else device, dtype=dtype)
    if args.offload:
        model.enable_model_offload(device)
    sd15 = load_sd15(args.sd15, device, dtype)

    def on_step(i: int, n: int) -> None:
        print(f"\rsampling {i}/{n}", end="" if i < n else "\n", file=sys.stderr, flush=True)

    edited = edit_photo(photo, au_delta, model, sd15, faces=_face_toolkit(args), condition=condition,
                        crop=args.crop, face_index=args.face_index, settings=settings, on_step=on_step)
    for image, path in zip(edited, outputs):
        save_image(image, path, overwrite=args.overwrite, source=args.image)  # its ICC, EXIF, JPEG quality
        print(f"wrote {path}")
    return outputs


def run_generate(args) -> list[Path]:
    from .assets import resolve_fineface
    from .au import AUVector
    from .errors import SettingsError
    from .files import check_outputs
    from .fineface.checks import check_aus
    from .fineface.generate import GenerateSettings, generate
    from .fineface.pipeline import FineFace
    from .imaging import check_image_format, from_tensor, save_image
    from .model.sd15 import load_sd15

    # Every setting and output checked before anything loads.
    settings = GenerateSettings(steps=args.steps, guidance=args.guidance, au_scale=args.au_scale,
                                lora_strength=args.lora_strength, seed=args.seed)
    if isinstance(args.batch, bool) or not 1 <= args.batch <= 64:
        raise SettingsError(f"--batch must be from 1 to 64, got {args.batch}")
    aus = check_aus(AUVector.cat([AUVector.parse(",".join(args.au))] * args.batch))
    device, dtype = _device_and_dtype(args)
    check_image_format(args.out)
    outputs = check_outputs(output_paths(args.out, args.batch), [], args.overwrite)
    folder = resolve_fineface(args.fineface_weights)
    model = FineFace.from_pretrained(folder, base=args.base, device=device, dtype=dtype,
                                     lora_strength=settings.lora_strength)
    parts = load_sd15(args.base, device, dtype)

    def on_step(i: int, n: int) -> None:
        print(f"\rsampling {i}/{n}", end="" if i < n else "\n", file=sys.stderr, flush=True)

    images = generate(model, parts, args.prompt, aus, args.negative_prompt, settings, on_step)
    for image, path in zip(from_tensor(images), outputs):
        save_image(image, path, overwrite=args.overwrite)
        print(f"wrote {path}")
    return outputs


def _video_settings(args, inputs: list[Path]):
    """Every video setting and the output path, checked before anything loads."""
    from .files import check_outputs
    from .settings import EditSettings, check_face_index
    from .video.edit import VideoSettings

    check_outputs([args.out], inputs, args.overwrite)
    check_face_index(args.face_index)
    settings = VideoSettings(frames_per_chunk=args.frames_per_chunk, detect_every=args.detect_every,
                             face_index=args.face_index, au_cutoff_hz=args.au_cutoff)
    settings.check()
    return settings, EditSettings(steps=args.steps, guidance=args.guidance, seed=args.seed, sampler=args.sampler)


def _video_models(args):
    from .model.magicface import MagicFace
    from .model.sd15 import load_sd15

    device, dtype = _device_and_dtype(args)
    return MagicFace.from_pretrained(args.weights, device=device, dtype=dtype), load_sd15(args.sd15, device, dtype)


def _progress(done: int, total: int) -> None:
    print(f"\rsampling {done}/{total} frame-steps", end="" if done < total else "\n", file=sys.stderr, flush=True)


def run_video(args) -> None:
    from .video.edit import edit_clip
    from .video.io import VideoFile, write_video
    from .video.keyframes import ExpressionChange

    # Every setting and input is checked before a model loads.
    from .settings import check_au_delta

    settings, edit = _video_settings(args, [args.video])
    change = ExpressionChange(check_au_delta(AUVector.parse(",".join(args.au))), args.keyframes, args.interpolation)
    clip = VideoFile(args.video)
    model, sd15 = _video_models(args)
    report, frames = edit_clip(clip, float(clip.info.fps), change, model, sd15, _face_toolkit(args), settings, edit,
                               reference_frame=args.reference_frame, on_progress=_progress)
    print(report)
    count = write_video(args.out, frames, clip.info.fps, audio_from=args.video)
    print(f"wrote {args.out} ({count} frames)")


def run_animate(args) -> None:
    from .imaging import load_image
    from .video.edit import animate_portrait
    from .video.io import VideoFile, write_video

    settings, edit = _video_settings(args, [args.image, args.driving])
    photo = load_image(args.image)
    if not args.crop:
        from .imaging import needs_resize_to_portrait

        needs_resize_to_portrait(photo.shape[1], photo.shape[0], "the portrait")
    driving = VideoFile(args.driving)
    model, sd15 = _video_models(args)
    report, frames = animate_portrait(photo, driving, float(driving.info.fps), model, sd15, _face_toolkit(args),
                                      settings, edit, mode=args.mode, neutral_frame=args.neutral_frame,
                                      crop=args.crop, on_progress=_progress)
    print(report)
    count = write_video(args.out, frames, driving.info.fps, audio_from=args.driving)
    print(f"wrote {args.out} ({count} frames)")


def run_estimate(args) -> None:
    from .imaging import load_image
    from .settings import check_face_index

    check_face_index(args.face_index)
    images = [load_image(p) for p in args.image]
    aus = _face_toolkit(args).estimate_aus(images, args.face_index)
    print(aus.table(title="AU intensities (0..5); columns: " + ", ".join(f"#{i} {p}" for i, p in enumerate(args.image))))


def run_condition(args) -> None:
    from .files import check_outputs
    from .imaging import as_portrait, check_image_format, load_image, save_image

    check_image_format(args.out)
    check_outputs([args.out], [args.image], args.overwrite)
    portrait = as_portrait(load_image(args.image))
    condition, _ = _face_toolkit(args).condition(portrait)
    save_image(condition, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")


def run_convert(args) -> None:
    from .devices import DTYPES
    from .files import check_outputs
    from .model.magicface import MagicFace

    source = Path(args.source)
    check_outputs([args.target], [source, *(source.rglob("*") if source.is_dir() else ())], args.overwrite,
                  option="target")
    model = MagicFace.from_pretrained(args.source, device="cpu", dtype="fp32")
    model.save_pretrained(args.target, single_file=args.target.suffix == ".safetensors", dtype=DTYPES[args.dtype])
    print(f"wrote {args.target}")


def run_download(args) -> None:
    from . import assets

    root = args.to or assets.cache_dir()
    print(f"MagicFace: {assets.fetch_magicface(root=root)}")
    print(f"Stable Diffusion 1.5: {assets.fetch_sd15(root=root, with_unet=args.training)}")
    for spec in assets.ALL_FILES:
        print(f"{spec.filename}: {assets.ensure_weight(spec, assets.preprocessing_dir(root))}")


def run_prepare(args) -> None:
    from .scaleout import Shard
    from .training.prepare import Settings, check_batch_size, check_settings, run

    check_settings(Settings(args.frame_step, args.max_frames, args.min_gap, args.pairs_per_clip, args.seed))
    check_batch_size(args.batch_size)
    Shard.parse(args.shard)
    run(args, _face_toolkit(args))  # the settings are checked before the face networks load


def run_evaluate(args) -> None:
    from .evaluation.evaluate import run

    device, dtype = _device_and_dtype(args)
    run(args, _face_toolkit(args), device, dtype)


def run_train(argv: list[str]) -> None:
    from .training.config import load_config
    from .training.loop import train

    print(f"wrote {train(load_config(argv))}")


COMMANDS = {"edit": run_edit, "estimate": run_estimate, "condition": run_condition, "convert": run_convert,
            "download": run_download, "prepare": run_prepare, "evaluate": run_evaluate, "video": run_video,
            "animate": run_animate, "generate": run_generate}


def _setup_logging(timestamps: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s" if timestamps else "%(message)s")


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed and locks released."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (0, 2 for an error the user can act on, 130 on Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _interrupt_on_sigterm()
    training = bool(argv) and argv[0] == "train"
    args = None if training else build_parser().parse_args(argv)  # argparse exits 2 on bad flags
    _setup_logging(timestamps=training)
    try:
        if training:
            run_train(argv[1:])
        else:
            COMMANDS[args.command](args)
    except MagicFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
