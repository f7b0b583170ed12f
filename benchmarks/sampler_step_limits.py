"""How many steps each sampler survives: the numbers behind ``schedulers.MAX_STEPS``.

    python benchmarks/sampler_step_limits.py                 # tiny random checkpoint, CPU (a few minutes)
    python benchmarks/sampler_step_limits.py --steps 998 999 1000 1001

Runs a whole AU-guided edit (guidance 3) with each sampler at each step count, the non-finite
guard switched off, and reports whether the final latents are finite, NaN, or whether the
scheduler itself raised. Which steps fail depends on the scheduler's timestep spacing against
SD 1.5's 1000 training timesteps, not on the model's weights, so the tiny model gives the same
limits as the published one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicface_core import AUVector, MagicFace  # noqa: E402
from magicface_core.model import magicface as magicface_module  # noqa: E402
from magicface_core.samplers import SAMPLER_NAMES  # noqa: E402

try:
    from tests.support.factories import TINY, random_inputs, write_published_checkpoint  # noqa: E402
except ImportError:
    from tests.support.factories import TINY, random_inputs, write_published_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[999, 1000, 1359, 1360])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = MagicFace.from_pretrained(write_published_checkpoint(Path(tmp) / "tiny", TINY), "cpu", "fp32")
    inputs = random_inputs(TINY)
    features = model.encode_identity(inputs["id_latents"], inputs["text_embeds"])
    magicface_module._check_finite = lambda *args: None  # measure the sampler, not the guard
    magicface_module.check_steps = lambda steps, sampler: steps
    print(f"{'sampler':<18}" + "".join(f"{s:>10}" for s in args.steps))
    for sampler in args.samplers:
        cells = []
        for steps in args.steps:
            try:
                latents = model.sample(features, inputs["cond_latents"], AUVector.parse("AU12=3"),
                                       inputs["text_embeds"], steps=steps, sampler=sampler, noise=inputs["noise"])
                cells.append("ok" if torch.isfinite(latents).all() else "NaN")
            except Exception as exc:  # the scheduler's own IndexError/ValueError past its table
                cells.append(type(exc).__name__[:9])
        print(f"{sampler:<18}" + "".join(f"{c:>10}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
