"""Run under torchrun by tests/test_distributed_training.py: train, and record on every process,
after every step, the samples it trained on and a hash of its weights (``rank<N>.json``).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/support/distributed_probe.py REPORT_DIR [train flags]
"""

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from magicface_core.cli.train import load_config  # noqa: E402
from magicface_core.training.loop import train  # noqa: E402


def weights_hash(module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    reports, steps = Path(sys.argv[1]), []
    train(load_config(sys.argv[2:]), on_step=lambda r: steps.append(
        {"step": r.step, "loss": r.loss, "samples": r.samples, "hash": weights_hash(r.module)}))
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(steps))


if __name__ == "__main__":
    main()
