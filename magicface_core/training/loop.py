"""The training loop: both UNets jointly, epsilon MSE, on one process or many (accelerate / torchrun).

Every random draw of a step (timesteps, noise, VAE posterior samples, AU dropout and noise)
comes from a generator seeded by (seed, micro-batch, process), and the data order by
(seed, epoch) and process, so a run resumed from a checkpoint, with the same number of
processes, continues exactly as if never stopped.

With N processes each sees its own ``batch_size`` samples per micro-batch (never the same
sample in one epoch), DistributedDataParallel averages the gradients, so every process holds
the same weights after every step; only the main process writes logs, validation grids,
exports and the shared parts of checkpoints, and every process saves its own RNG state.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..au import AUVector
from ..errors import DataError, MissingDependencyError, NonFiniteError, SettingsError
from ..files import PARTIAL_SUFFIX as PARTIAL
from ..model.magicface import LATENT_SCALE, MagicFace
from ..samplers import SD15_SCHEDULER_CONFIG
from ..model.sd15 import vae_encode
from .config import TrainConfig
from .dataset import INDEX_FILE, EpochBatches, PairDataset, apply_au_rules, check_index, load_rgb, read_index
from .module import MagicFaceTrainingModule
from .run_folder import CHECKPOINTS, EXPORT_NAME, LOG_NAME, LOGS, VALIDATION, RunFolder, step_number

logger = logging.getLogger(__name__)

LAYOUT_NAME = "layout.json"  # in each checkpoint: what the data order and random draws depend on


def step_generator(config: TrainConfig, micro_step: int, process: int) -> torch.Generator:
    return torch.Generator().manual_seed(((config.seed * 1_000_003 + micro_step) * 1_009 + process) % (2**63))



@torch.no_grad()
def training_inputs(vae, text: torch.Tensor, batch: dict, noise_scheduler, config: TrainConfig,
                    generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One micro-batch's model inputs (see :class:`MagicFaceTrainingModule`) and its target noise."""
    device = text.device
    batch_size = batch["target"].shape[0]
    # Identity and condition enter unscaled (posterior mode), the target in SD's scaled space.
    id_latents = vae_encode(vae, batch["identity"])
    cond_latents = vae_encode(vae, batch["condition"])
    latents = vae_encode(vae, batch["target"], generator) * LATENT_SCALE
    au = apply_au_rules(batch["au_delta"].float().cpu(), generator, config.au_dropout, config.no_change_noise,
                        config.no_change_threshold).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
    timesteps = timesteps.to(device)
    inputs = {"id_latents": id_latents, "cond_latents": cond_latents, "timesteps": timesteps, "au": au,
              "noisy": noise_scheduler.add_noise(latents, noise, timesteps), "text": text.expand(batch_size, -1, -1)}
    return inputs, noise


def build_optimizer(params, config: TrainConfig):
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise MissingDependencyError("--use-8bit-adam needs bitsandbytes (pip install bitsandbytes)") from exc
        optimizer_cls = bnb.optim.AdamW8bit
    else:
        optimizer_cls = torch.optim.AdamW
    return optimizer_cls(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                         weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)


# What accelerate's save_state always writes (the model also as pytorch_model.bin in older runs).
_STATE_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def check_checkpoint_folder(folder: Path) -> None:
    """``--resume PATH`` names a complete checkpoint this pack wrote, before anything loads."""
    hint = "give one of a run's checkpoints/step-N folders, or --resume latest with that run's --output-dir"
    if not folder.is_dir():
        raise SettingsError(f"--resume {folder}: no such checkpoint folder; {hint}")
    if folder.name.endswith(PARTIAL):
        raise SettingsError(f"--resume {folder}: this checkpoint was left incomplete by an interrupted run; {hint}")
    missing = [name for name in _STATE_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        missing.insert(0, "model.safetensors")
    if missing:
        if (folder / CHECKPOINTS).is_dir():
            hint = f"this is a run's output folder: pass --output-dir {folder} --resume latest"
        raise SettingsError(f"--resume {folder} is not a training checkpoint (no {', '.join(missing)}); {hint}")


def check_before_loading(config: TrainConfig, processes: int) -> int:
    """Everything about the data, the output folder and the process count that can be checked
    without loading a model; returns the number of training pairs."""
    if not config.data:
        raise SettingsError("--data is required: the folder written by `python -m magicface_core prepare`")
    index = Path(config.data) / INDEX_FILE
    if not index.is_file():
        raise DataError(f"{config.data} holds no prepared training set ({INDEX_FILE} not found): "
                        "run `python -m magicface_core prepare` first")
    try:
        frames, pairs = read_index(config.data)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{index} cannot be read ({exc}); prepare the data again") from exc
    check_index(config.data, frames, pairs)
    if not pairs:
        raise DataError(f"{config.data} has no training pairs; prepare more clips or lower --min-gap")
    needed = config.batch_size * processes
    if len(pairs) < needed:
        raise SettingsError(
            f"{len(pairs)} training pairs cannot fill one step of {processes} process(es) x batch size "
            f"{config.batch_size} = {needed} samples; lower --batch-size, use fewer processes or prepare more data"
        )
    if config.resume and config.resume != "latest":
        check_checkpoint_folder(Path(config.resume))
    RunFolder(config.output).check(config)
    return len(pairs)


def prepare_output(config: TrainConfig, accelerator) -> Path | None:
    """Clean up after an interrupted or replaced run (main process), record what this run writes
    (run_folder.RunFolder.start) and say where to resume from."""
    output = config.output
    if accelerator.is_main_process:
        RunFolder(output).start(config)
    accelerator.wait_for_everyone()
    if config.resume == "latest":
        found = RunFolder(output).latest_checkpoint()
        if found is None:
            logger.info("no complete checkpoint in %s yet: starting from step 0", output / CHECKPOINTS)
        else:
            check_checkpoint_folder(found)  # e.g. files of it deleted by hand: said here, not by accelerate
        return found
    return Path(config.resume) if config.resume else None


class CsvLog:
    """``train_log.csv`` of one run: a resumed run first drops the rows after its checkpoint."""

    def __init__(self, path: Path, enabled: bool, resumed_step: int):
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            with open(path, newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resumed_step]
            path.unlink()
            for row in rows:
                self.write(row)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


@dataclass
class StepReport:
    """What ``train(on_step=...)`` sees after every optimizer step, on every process."""

    step: int
    loss: float  # averaged over the processes
    samples: list[int]  # dataset indices this process trained on in this step
    process: int
    module: torch.nn.Module  # the unwrapped training module


def train(config: TrainConfig, on_step: Callable[[StepReport], None] | None = None) -> Path:
    """Run (or resume) training; returns the path of the final exported weights."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    output = config.output
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if config.log_with == "tensorboard" else None,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / LOGS)),
    )
    check_before_loading(config, accelerator.num_processes)
    # One run at a time in a folder: a second one is refused before it cleans up or writes anything.
    with RunFolder(output).lock() if accelerator.is_main_process else contextlib.nullcontext():
        return _run(config, accelerator, on_step)


def _run(config: TrainConfig, accelerator, on_step: Callable[[StepReport], None] | None) -> Path:
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from ..model.sd15 import encode_prompt, load_sd15
    from .sd15_init import magicface_from_sd15

    output = config.output
    resume_from = prepare_output(config, accelerator)
    set_seed(config.seed)

    device = accelerator.device
    base = load_sd15(config.sd15, device, torch.float32, with_unet=not config.init_from)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    base.vae.to(dtype=weight_dtype)
    text = encode_prompt(base).detach()
    base.text_encoder.to("cpu")  # frozen and used once: the prompt's embedding is all training needs

    magicface = MagicFace.from_pretrained(config.init_from, device="cpu", dtype="fp32") if config.init_from \
        else magicface_from_sd15(base.unet)
    del base.unet
    for unet in (magicface.denoiser, magicface.id_encoder):
        unet.train().requires_grad_(True)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
    module = MagicFaceTrainingModule(magicface)
    params = list(module.parameters())
    optimizer = build_optimizer(params, config)
    ema = None
    if config.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay)
        accelerator.register_for_checkpointing(ema)

    dataset = PairDataset(config.data, config.resolution)
    batches = EpochBatches(len(dataset), config.batch_size, config.seed, accelerator.process_index,
                           accelerator.num_processes)
    # Not prepared by accelerate: the batches above are already this process's share.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=config.num_workers)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.max_steps * accelerator.num_processes)
    model, optimizer, lr_scheduler = accelerator.prepare(module, optimizer, lr_scheduler)
    magicface.set_execution_device(device)  # validation computes where accelerate placed the UNets
    if ema is not None:
        ema.to(device)
    noise_scheduler = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)

    global_step = 0
    layout = {"processes": accelerator.num_processes, "batch_size": config.batch_size,
              "gradient_accumulation_steps": config.gradient_accumulation_steps, "seed": config.seed}
    if resume_from is not None:
        load_training_state(accelerator, resume_from)
        global_step = step_number(resume_from)
        logger.info("resumed from %s (step %d)", resume_from, global_step)
        _warn_if_layout_changed(resume_from, layout, accelerator.is_main_process)
    if accelerator.is_main_process and config.log_with == "tensorboard":
        accelerator.init_trackers("magicface")
    log = CsvLog(output / LOG_NAME, accelerator.is_main_process, global_step)

    micro_step = global_step * config.gradient_accumulation_steps
    started = time.time()
    samples: list[int] = []
    while global_step < config.max_steps:
        epoch, skip = divmod(micro_step, len(batches))
        batches.set_epoch(epoch, skip)
        for batch in loader:
            samples += batch["index"].tolist()
            with accelerator.accumulate(model), accelerator.autocast():
                generator = step_generator(config, micro_step, accelerator.process_index)
                inputs, target = training_inputs(base.vae, text, batch, noise_scheduler, config, generator)
                loss = F.mse_loss(model(inputs).float(), target.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(params)
            mean_loss = float(accelerator.reduce(loss.detach(), "mean"))  # the same on every process
            if not math.isfinite(mean_loss):
                raise NonFiniteError(
                    f"the loss became {mean_loss} at step {global_step}: training diverged, and nothing from this "
                    f"step on was saved. Lower --learning-rate (now {config.learning_rate:g}) or --max-grad-norm, "
                    "then start over with --overwrite, or go on from an earlier checkpoint with --resume")
            if global_step % config.log_every == 0 or global_step == 1:
                row = {"step": global_step, "loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0],
                       "seconds": round(time.time() - started, 2)}
                log.write(row)
                accelerator.log({"loss": row["loss"], "lr": row["lr"]}, step=global_step)
            if on_step is not None:
                on_step(StepReport(global_step, mean_loss, samples, accelerator.process_index,
                                   accelerator.unwrap_model(model)))
            samples = []
            if global_step % config.checkpoint_every == 0 or global_step == config.max_steps:
                save_checkpoint(accelerator, magicface, ema, params, output, global_step, config, layout)
            if config.validate_every and global_step % config.validate_every == 0 and accelerator.is_main_process:
                validate(magicface, ema, params, base.vae, text, dataset, config, output, global_step)
            if global_step >= config.max_steps:
                break
    accelerator.wait_for_everyone()
    final = output / EXPORT_NAME
    if accelerator.is_main_process:
        export(magicface, ema, params, final, config)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def export(magicface: MagicFace, ema, params, path: Path, config: TrainConfig) -> None:
    """Write the loader's single-file format (EMA weights when EMA is on), atomically."""
    from ..devices import DTYPES

    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        magicface.save_pretrained(path, single_file=True, dtype=DTYPES[config.save_dtype])  # atomic (files.atomic_path)
    finally:
        if ema is not None:
            ema.restore(params)


def save_checkpoint(accelerator, magicface, ema, params, output: Path, step: int, config: TrainConfig,
                    layout: dict) -> None:
    """Training state for resuming (every process writes its own RNG state), plus the weights in the
    loader's format. Written under a ``.partial`` name and renamed when complete; no process goes on
    before it is."""
    folder = output / CHECKPOINTS / f"step-{step:07d}"
    partial = folder.with_name(folder.name + PARTIAL)
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        export(magicface, ema, params, partial / EXPORT_NAME, config)
        (partial / LAYOUT_NAME).write_text(json.dumps(layout))
        if folder.exists():  # a step saved before by a run that was resumed from an earlier checkpoint
            shutil.rmtree(folder)
        partial.rename(folder)
        old = RunFolder(output).checkpoints()
        for stale in old[:-config.keep_checkpoints] if config.keep_checkpoints > 0 else []:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()


def load_training_state(accelerator, folder: Path) -> None:
    """``accelerator.load_state``, with nothing in the folder able to run code.

    accelerate reads its own files weights-only, but the objects registered for checkpointing (the
    EMA, ``custom_checkpoint_N.pkl``) with ``weights_only=False``, and it skips an unreadable RNG file
    without a word. So every pickle is first opened weights-only here (memory-mapped: nothing is read
    twice) and refused by name if it holds anything else, and the registered objects are read
    weights-only too."""
    import accelerate.accelerator as accelerate_accelerator
    from accelerate.utils import load as weights_only_load  # torch.load(weights_only=True) + RNG types

    from ..errors import CheckpointError

    for path in sorted(folder.iterdir()):
        if path.suffix not in (".bin", ".pkl", ".pt", ".pth"):
            continue
        try:
            weights_only_load(str(path), map_location="cpu", mmap=True)
        except Exception as exc:
            raise CheckpointError(
                f"{path} holds more than weights and training state, so it was not loaded (it could run "
                f"code: {str(exc).splitlines()[0]}). Resume from a checkpoint this pack wrote "
                "(--resume latest after deleting this folder, or --resume PATH/checkpoints/step-N)."
            ) from exc

    def load_custom_state(obj, path: str, index: int = 0) -> None:
        obj.load_state_dict(weights_only_load(f"{path}/custom_checkpoint_{index}.pkl", map_location="cpu"))

    unsafe = accelerate_accelerator.load_custom_state
    accelerate_accelerator.load_custom_state = load_custom_state
    try:
        accelerator.load_state(str(folder))
    finally:
        accelerate_accelerator.load_custom_state = unsafe


def _warn_if_layout_changed(checkpoint: Path, layout: dict, main: bool) -> None:
    """Which samples and random draws a step gets depends on these; a change still trains, but not
    as the interrupted run would have gone on."""
    path = checkpoint / LAYOUT_NAME
    saved = json.loads(path.read_text()) if path.is_file() else {}
    changed = {k: (saved[k], v) for k, v in layout.items() if k in saved and saved[k] != v}
    if changed and main:
        listed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
        logger.warning("resuming with %s: the run continues, but not exactly as it would have without the stop", listed)


@torch.no_grad()
def validate(magicface: MagicFace, ema, params, vae, text, dataset: PairDataset, config: TrainConfig,
             output: Path, step: int) -> Path:
    """A grid: one row per validation identity, its portrait then one column per AU delta (fixed seeds)."""
    from ..imaging import from_tensor, save_image
    from ..model.sd15 import vae_decode

    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    for module in (magicface.denoiser, magicface.id_encoder):
        module.eval()
    try:
        deltas = AUVector.cat([AUVector.parse(d) for d in config.validation_deltas])
        device = text.device
        seen, rows = set(), []
        for pair in dataset.pairs:
            frame = dataset.frames[pair.identity]
            if frame.image in seen:
                continue
            seen.add(frame.image)
            portrait = load_rgb(dataset.root / frame.image, config.resolution)[None]
            condition = load_rgb(dataset.root / frame.condition, config.resolution)[None]
            features = magicface.encode_identity(vae_encode(vae, portrait), text)
            latents = magicface.sample(features, vae_encode(vae, condition), deltas, text, steps=config.validation_steps,
                                       guidance=config.validation_guidance, seed=config.seed)
            rows.append(torch.cat([portrait.to(device), vae_decode(vae, latents).to(device)]))
            if len(rows) == config.validation_identities:
                break
        grid = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)
        path = output / VALIDATION / f"step-{step:07d}.png"
        save_image(from_tensor(grid[None])[0], path)
        return path
    finally:
        for module in (magicface.denoiser, magicface.id_encoder):
            module.train()
        if ema is not None:
            ema.restore(params)
