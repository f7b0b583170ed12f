"""The training loop: both UNets jointly, epsilon MSE, on one or many GPUs through accelerate.

Every random draw of a step (timesteps, noise, VAE posterior samples, AU dropout and noise)
comes from a generator seeded by (seed, micro-batch, process), and the data order by
(seed, epoch), so a run resumed from a checkpoint continues exactly as if never stopped.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..au import AUVector
from ..errors import MissingDependencyError
from ..model.magicface import LATENT_SCALE, MagicFace
from ..model.schedulers import SD15_SCHEDULER_CONFIG
from ..model.sd15 import vae_encode
from .config import TrainConfig
from .dataset import EpochSampler, PairDataset, apply_au_rules, load_rgb

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
EXPORT_NAME = "magicface.safetensors"


def step_generator(config: TrainConfig, micro_step: int, process: int) -> torch.Generator:
    return torch.Generator().manual_seed(((config.seed * 1_000_003 + micro_step) * 1_009 + process) % (2**63))


def training_loss(magicface: MagicFace, denoiser, id_encoder, vae, text: torch.Tensor, batch: dict,
                  noise_scheduler, config: TrainConfig, generator: torch.Generator, backward) -> torch.Tensor:
    """One micro-batch: encode, noise, predict, MSE; ``backward(loss)`` runs while identity is bound."""
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
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    text = text.expand(batch_size, -1, -1)

    features = magicface.recorder.record(
        lambda: id_encoder(id_latents, torch.zeros_like(timesteps), encoder_hidden_states=text), stop_early=False
    )
    with magicface.injection.bind(features):
        prediction = denoiser(torch.cat([noisy, cond_latents], dim=1), timesteps, encoder_hidden_states=text,
                              class_labels=au).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        backward(loss)  # inside: gradient checkpointing recomputes attention with the identity bound
    return loss.detach()


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


def latest_checkpoint(output: Path) -> Path | None:
    folders = sorted((output / CHECKPOINTS).glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
    return folders[-1] if folders else None


class CsvLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def train(config: TrainConfig) -> Path:
    """Run (or resume) training; returns the path of the final exported weights."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from ..model.sd15 import encode_prompt, load_sd15
    from .sd15_init import magicface_from_sd15

    output = config.output
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if config.log_with == "tensorboard" else None,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
        # The ID encoder's layers after its last transformer block do not reach the loss.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(config.seed)
    output.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (output / "config.yaml").write_text(_to_yaml(config))

    device = accelerator.device
    base = load_sd15(config.sd15, device, torch.float32, with_unet=not config.init_from)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    base.vae.to(dtype=weight_dtype)
    text = encode_prompt(base).detach()
    base.text_encoder.to("cpu")  # frozen and used once: the prompt's embedding is all training needs

    magicface = MagicFace.from_pretrained(config.init_from, device="cpu", dtype="fp32") if config.init_from \
        else magicface_from_sd15(base.unet)
    del base.unet
    for module in (magicface.denoiser, magicface.id_encoder):
        module.train().requires_grad_(True)
        if config.gradient_checkpointing:
            module.enable_gradient_checkpointing()
    params = list(magicface.denoiser.parameters()) + list(magicface.id_encoder.parameters())
    optimizer = build_optimizer(params, config)
    ema = None
    if config.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay)
        accelerator.register_for_checkpointing(ema)

    dataset = PairDataset(config.data, config.resolution)
    sampler = EpochSampler(len(dataset), config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=config.num_workers, drop_last=len(dataset) >= config.batch_size)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.max_steps * accelerator.num_processes)
    denoiser, id_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(
        magicface.denoiser, magicface.id_encoder, optimizer, loader, lr_scheduler)
    magicface.set_execution_device(device)  # accelerate placed the UNets; validation computes there
    if ema is not None:
        ema.to(device)
    noise_scheduler = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)

    global_step = 0
    resume_from = latest_checkpoint(output) if config.resume == "latest" else (Path(config.resume) if config.resume else None)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        global_step = int(resume_from.name.split("-")[1])
        logger.info("resumed from %s (step %d)", resume_from, global_step)
    if accelerator.is_main_process and config.log_with == "tensorboard":
        accelerator.init_trackers("magicface")
    log = CsvLog(output / "train_log.csv", accelerator.is_main_process)

    micro_step = global_step * config.gradient_accumulation_steps
    batches_per_epoch = len(loader)
    started = time.time()
    while global_step < config.max_steps:
        epoch, skip = divmod(micro_step, batches_per_epoch)
        sampler.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            with accelerator.accumulate(denoiser, id_encoder), accelerator.autocast():
                generator = step_generator(config, micro_step, accelerator.process_index)
                loss = training_loss(magicface, denoiser, id_encoder, base.vae, text, batch, noise_scheduler,
                                     config, generator, accelerator.backward)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(params)
            if not math.isfinite(float(loss)):
                raise FloatingPointError(f"the loss became {float(loss)} at step {global_step}")
            if global_step % config.log_every == 0 or global_step == 1:
                row = {"step": global_step, "loss": float(accelerator.gather(loss[None]).mean()),
                       "lr": lr_scheduler.get_last_lr()[0], "seconds": round(time.time() - started, 2)}
                log.write(row)
                accelerator.log({"loss": row["loss"], "lr": row["lr"]}, step=global_step)
            if global_step % config.checkpoint_every == 0 or global_step == config.max_steps:
                save_checkpoint(accelerator, magicface, ema, params, output, global_step, config)
            if config.validate_every and global_step % config.validate_every == 0 and accelerator.is_main_process:
                validate(magicface, ema, params, base.vae, text, dataset, config, output, global_step)
            if global_step >= config.max_steps:
                break
    accelerator.wait_for_everyone()
    final = output / EXPORT_NAME
    if accelerator.is_main_process:
        export(magicface, ema, params, final, config)
    accelerator.end_training()
    return final


def export(magicface: MagicFace, ema, params, path: Path, config: TrainConfig) -> None:
    """Write the loader's single-file format (EMA weights when EMA is on)."""
    from ..devices import DTYPES

    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        magicface.save_pretrained(path, single_file=True, dtype=DTYPES[config.save_dtype])
    finally:
        if ema is not None:
            ema.restore(params)


def save_checkpoint(accelerator, magicface, ema, params, output: Path, step: int, config: TrainConfig) -> None:
    """Training state for resuming, plus the weights in the loader's format; complete or absent."""
    folder = output / CHECKPOINTS / f"step-{step:07d}"
    partial = folder.with_name(folder.name + ".partial")  # a run killed while saving leaves only this
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        export(magicface, ema, params, partial / EXPORT_NAME, config)
        partial.rename(folder)
        old = sorted((output / CHECKPOINTS).glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
        for stale in old[:-config.keep_checkpoints] if config.keep_checkpoints > 0 else []:
            shutil.rmtree(stale)


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
        path = output / "validation" / f"step-{step:07d}.png"
        save_image(from_tensor(grid[None])[0], path)
        return path
    finally:
        for module in (magicface.denoiser, magicface.id_encoder):
            module.train()
        if ema is not None:
            ema.restore(params)


def _to_yaml(config: TrainConfig) -> str:
    import dataclasses

    import yaml

    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
