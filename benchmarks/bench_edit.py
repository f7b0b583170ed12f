"""Speed and memory of an edit: our sampler against the authors' way of computing it.

    python benchmarks/bench_edit.py                      # small checkpoint, CPU, fp32 (a minute)
    python benchmarks/bench_edit.py --sizes small sd15 --batches 1 8 --dtypes fp32 bf16 fp16 --device cuda \\
        --steps 25 --naive-steps 50 --with-vae

Both paths run on the same random checkpoint (published format) and the same inputs:

* ours: identity keys/values computed once per edit, queries only for the denoising tokens,
  ID encoder once on the un-duplicated batch, stopped after its last transformer block;
* naive (the authors' way, from tests/support/reference.py): the identity tokens concatenated into every
  self-attention (2N queries), their keys/values recomputed at every step and branch, the ID
  encoder run in full on the duplicated guidance batch. Both use torch's SDPA kernel.

Per step = sampling time / steps; per edit = ID encoding + sampling (+ VAE decode of the
result with --with-vae). Peak memory: CUDA's allocator peak on a GPU, resident-set growth on a
CPU. The last column is the largest absolute difference between the two paths' latents.
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicface_core import AUVector, MagicFace  # noqa: E402
from magicface_core.devices import DTYPES as PRODUCT_DTYPES  # noqa: E402
from tests.support.factories import SMALL, random_published_parts, write_published_checkpoint  # noqa: E402
from tests.support.reference import NaiveMagicFace, sdpa_attention  # noqa: E402

SIZES = {"small": SMALL, "sd15": {}}  # {} = SD 1.5's own UNet config
# fp64 shows that the two paths compute the same function: their difference drops to rounding noise.
DTYPES = {**PRODUCT_DTYPES, "fp64": torch.float64}
AU_VARIANTS = [{"AU12": 3, "AU6": 2}, {"AU12": -3}, {"AU1": 2, "AU4": 2}, {"AU26": 4}, {"AU2": 3},
               {"AU15": 2, "AU17": 1}, {"AU9": 2}, {"AU25": 3, "AU20": 1}]


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose 'mb' is filled with the peak allocation during the block."""
    result = {"mb": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result["mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    base = _rss_mb()
    peak, stop = [base], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["mb"] = max(peak[0], _rss_mb()) - base


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(device: torch.device, fn):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def supported(dtype: torch.dtype, device: torch.device) -> bool:
    if device.type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    return True


def run_case(parts, size: str, batch: int, dtype: torch.dtype, device: torch.device, args, tmp: Path) -> dict:
    config = parts["denoising_unet"][0]
    latent = args.latent_size
    generator = torch.Generator().manual_seed(0)
    id_latents = torch.randn(1, 4, latent, latent, generator=generator) * 5
    cond_latents = torch.randn(1, 4, latent, latent, generator=generator) * 5
    text = torch.randn(1, 77, config["cross_attention_dim"], generator=generator)
    noise = torch.randn(batch, 4, latent, latent, generator=generator)
    au = AUVector.from_dicts(AU_VARIANTS[:batch])

    ours = MagicFace.from_pretrained(tmp / size, device=device, dtype=dtype)
    if args.channels_last:
        ours.enable_channels_last()
    vae = None
    if args.with_vae:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2).to(device, dtype).eval()

    def decode(latents):
        if vae is None:
            return None, 0.0
        with torch.no_grad():
            return timed(device, lambda: vae.decode(latents.to(dtype)).sample)

    warm = ours.encode_identity(id_latents, text)  # warm-up: kernels, allocator
    ours.sample(warm, cond_latents, au, text, steps=2, guidance=3.0, noise=noise)
    del warm
    with peak_memory(device) as our_memory:
        features, id_time = timed(device, lambda: ours.encode_identity(id_latents, text))
        our_latents, sample_time = timed(device, lambda: ours.sample(features, cond_latents, au, text, steps=args.steps,
                                                                     guidance=3.0, noise=noise))
        _, decode_time = decode(our_latents)
    row = {"size": size, "batch": batch, "dtype": str(dtype).replace("torch.", ""), "steps": args.steps,
           "ours_step_ms": 1000 * sample_time / args.steps, "ours_edit_s": id_time + sample_time + decode_time,
           "ours_peak_mb": our_memory["mb"]}
    ours = features = None  # free the model before the naive path loads its own copy
    if args.naive:
        naive = NaiveMagicFace(parts, dtype=dtype, device=device, attention=sdpa_attention)
        run = lambda steps: naive.sample(id_latents, cond_latents, au.to_tensor(), text, noise, steps=steps, guidance=3.0)
        with torch.no_grad():
            run(2)
            doubled = lambda t: torch.cat([t] * 2 * batch).to(device, dtype)
            _, naive_id_time = timed(device, lambda: naive.id_features(doubled(id_latents), doubled(text)))
            with peak_memory(device) as naive_memory:
                naive_latents, naive_time = timed(device, lambda: run(args.naive_steps))
        naive_step = (naive_time - naive_id_time) / args.naive_steps
        row.update({"naive_step_ms": 1000 * naive_step, "naive_edit_s": naive_id_time + naive_step * args.steps + decode_time,
                    "naive_peak_mb": naive_memory["mb"]})
        row["step_ratio"] = row["ours_step_ms"] / row["naive_step_ms"]
        if args.naive_steps == args.steps:
            diff = (our_latents.double() - naive_latents.double()).abs().max()
            row["max_abs_diff"] = float(diff)
            row["rel_diff"] = float(diff / naive_latents.double().abs().max())
    return row


SOLVER_LATENT_SIZE = 16  # the discretisation error hardly depends on the image size; 16 keeps 1,000 steps quick


def solver_accuracy(parts, tmp: Path, device: torch.device, args) -> list[dict]:
    """How far each sampler at few steps lands from a 200-step UniPC solution of the same ODE."""
    model = MagicFace.from_pretrained(tmp / "small", device=device, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    latent = SOLVER_LATENT_SIZE
    text = torch.randn(1, 77, parts["denoising_unet"][0]["cross_attention_dim"], generator=generator)
    id_latents, cond = torch.randn(1, 4, latent, latent, generator=generator), torch.randn(1, 4, latent, latent, generator=generator)
    noise = torch.randn(1, 4, latent, latent, generator=generator)
    features = model.encode_identity(id_latents, text)
    au = AUVector.from_dict({"AU12": 3})
    reference = model.sample(features, cond, au, text, steps=200, sampler="uni_pc", noise=noise)
    rows = []
    for sampler in ("uni_pc", "ddim", "euler", "dpmpp_2m", "dpmpp_2m_karras"):
        row = {"sampler": sampler}
        for steps in (10, 20, 25, 50):
            out = model.sample(features, cond, au, text, steps=steps, sampler=sampler, noise=noise)
            row[f"{steps} steps"] = float((out - reference).norm() / reference.norm())
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_parts(folder: Path) -> dict:
    """(config, state dict) per UNet of a published-layout folder, for the naive path."""
    import json

    from safetensors.torch import load_file

    return {part: (json.loads((folder / part / "config.json").read_text()),
                   load_file(str(folder / part / "diffusion_pytorch_model.safetensors")))
            for part in ("denoising_unet", "ID_enc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=list(DTYPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps of our path")
    parser.add_argument("--naive-steps", type=int, default=None, help="steps of the naive path (default: --steps)")
    parser.add_argument("--latent-size", type=int, default=64, help="64 = a 512x512 image")
    parser.add_argument("--no-naive", dest="naive", action="store_false")
    parser.add_argument("--with-vae", action="store_true", help="include an SD 1.5-size VAE decode in the edit time")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--solver-accuracy", action="store_true", help="also compare samplers' step counts")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # SIZE:BATCH:DTYPE, run in a child process
    parser.add_argument("--checkpoints", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.naive_steps = args.naive_steps or args.steps
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.case:  # one measurement in a fresh process, so that memory peaks do not mix
        import json

        size, batch, dtype_name = args.case.split(":")
        row = run_case(read_parts(args.checkpoints / size), size, int(batch), DTYPES[dtype_name], device, args,
                       args.checkpoints)
        print("ROW " + json.dumps(row))
        return

    import json
    import subprocess
    from tests.support.paths import scratch_dir

    tmp = scratch_dir("magicface-bench-")
    for size in set(args.sizes) | ({"small"} if args.solver_accuracy else set()):
        write_published_checkpoint(tmp / size, parts=random_published_parts(SIZES[size], seed=0))
    print(f"# MagicFace edit benchmark\n\nmachine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"; torch {torch.__version__}; latents {args.latent_size}x{args.latent_size}; "
          f"command: python {' '.join(sys.argv)}\n")
    passthrough = [a for a in sys.argv[1:]]
    rows = []
    for size in args.sizes:
        for dtype_name in args.dtypes:
            if not supported(DTYPES[dtype_name], device):
                print(f"(skipping {dtype_name}: not supported on {device})")
                continue
            for batch in args.batches:
                child = subprocess.run([sys.executable, __file__, *passthrough, "--case", f"{size}:{batch}:{dtype_name}",
                                        "--checkpoints", str(tmp)], capture_output=True, text=True)
                lines = [line for line in child.stdout.splitlines() if line.startswith("ROW ")]
                if child.returncode != 0 or not lines:
                    print(f"({size} batch {batch} {dtype_name} failed: {child.stderr.strip()[-500:]})")
                    continue
                rows.append(json.loads(lines[-1][4:]))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print("\n" + table(rows))
    if args.solver_accuracy:
        print(f"\nRelative distance to a 200-step UniPC solution (small checkpoint, fp32, "
              f"latents {SOLVER_LATENT_SIZE}x{SOLVER_LATENT_SIZE}):\n")
        print(table(solver_accuracy(read_parts(tmp / "small"), tmp, device, args)))


if __name__ == "__main__":
    main()
