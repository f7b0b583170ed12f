"""Training on two processes (torch.distributed's gloo backend on the CPU, started by torchrun),
the way README's multi-process command runs it: shared gradients, equal weights, exact resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.factories import write_tiny_sd15
from tests.test_training import RESOLUTION, make_dataset

PROCESSES = 2


def torchrun(*args, wait: bool = True, timeout: float = 300):
    """``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 ...``, as README documents it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(PROCESSES),
               *map(str, args)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def kill_job(process: subprocess.Popen) -> None:
    """SIGKILL the workers (torchrun starts each in a session of its own, beyond a group kill), then torchrun."""
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            os.kill(int(child), signal.SIGKILL)
    process.kill()
    process.wait()


def flags(data, sd15, output, max_steps, *extra):
    return ["--data", data, "--sd15", sd15, "--output-dir", output, "--resolution", RESOLUTION, "--batch-size", 2,
            "--learning-rate", "1e-4", "--max-steps", max_steps, "--checkpoint-every", 2, "--validate-every", 0,
            "--log-every", 1, "--num-workers", 0, "--save-dtype", "fp32", *extra]


def losses(output: Path) -> dict[int, float]:
    with open(output / "train_log.csv") as handle:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return make_dataset(root / "data"), write_tiny_sd15(root / "sd15", with_unet=True), root


@pytest.fixture(scope="module")
def straight_run(inputs):
    """An uninterrupted 2-process run of 4 steps, each process reporting every step (tests/support/distributed_probe.py)."""
    data, sd15, root = inputs
    output, reports = root / "straight", root / "reports"
    result = torchrun(REPO / "tests" / "support" / "distributed_probe.py", reports, *flags(data, sd15, output, 4))
    assert result.returncode == 0, result.stderr[-3000:]
    per_rank = [json.loads((reports / f"rank{rank}.json").read_text()) for rank in range(PROCESSES)]
    return output, per_rank


def test_two_processes_share_gradients_and_end_with_equal_weights(straight_run):
    output, (rank0, rank1) = straight_run
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == [1, 2, 3, 4]
    previous = None
    for a, b in zip(rank0, rank1):
        assert a["hash"] == b["hash"], a["step"]  # the same weights on both processes after every step
        assert a["hash"] != previous  # and they moved
        assert not set(a["samples"]) & set(b["samples"]), a["step"]  # each process its own samples
        assert a["loss"] == b["loss"]  # the logged loss is the mean over the processes
        previous = a["hash"]
    # 12 pairs, 2 processes x batch 2: an epoch is 3 steps, in which no pair is seen twice.
    first_epoch = [s for r in (rank0, rank1) for step in r[:3] for s in step["samples"]]
    assert sorted(first_epoch) == list(range(12))
    print("per-rank final weight hashes:", rank0[-1]["hash"], rank1[-1]["hash"])
    print("losses:", losses(output))


def test_every_process_saves_its_own_rng_state_in_the_checkpoint(straight_run):
    output, _ = straight_run
    for step in ("step-0000002", "step-0000004"):
        names = {p.name for p in (output / "checkpoints" / step).iterdir()}
        assert {f"random_states_{rank}.pkl" for rank in range(PROCESSES)} <= names
        assert {"model.safetensors", "optimizer.bin", "magicface.safetensors"} <= names
        layout = json.loads((output / "checkpoints" / step / "layout.json").read_text())
        assert layout == {"processes": 2, "batch_size": 2, "gradient_accumulation_steps": 1, "seed": 0}
    assert not list(output.rglob("*.partial"))
    assert (output / "magicface.safetensors").is_file()


def test_resume_on_two_processes_after_a_kill_continues_exactly(inputs, straight_run):
    data, sd15, root = inputs
    straight, _ = straight_run
    killed = root / "killed"
    process = torchrun("-m", "magicface_core", "train", *flags(data, sd15, killed, 1000), wait=False)
    deadline = time.time() + 300
    try:
        while not (killed / "checkpoints" / "step-0000002").is_dir():
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.02)
    finally:
        kill_job(process)
    assert not (killed / "checkpoints" / "step-0000004").exists()  # killed between the step-2 and step-4 saves
    result = torchrun("-m", "magicface_core", "train", *flags(data, sd15, killed, 4, "--resume", "latest"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step-0000002 (step 2)" in result.stderr  # resumed there
    before, after = losses(straight), losses(killed)
    print("uninterrupted:", before, "resumed:", after)
    assert sorted(after) == [1, 2, 3, 4]  # the log holds this run only: no rows from after the checkpoint twice
    for step in (3, 4):
        assert after[step] == before[step]  # bit for bit: the same ops in the same order on the CPU


def test_a_config_that_cannot_fill_a_step_on_two_processes_is_refused_before_loading(tmp_path, inputs):
    _, sd15, _ = inputs
    data = make_dataset(tmp_path / "data", clips=1, frames_per_clip=2)  # 2 pairs; 2 processes x batch 2 need 4
    started = time.time()
    result = torchrun("-m", "magicface_core", "train", *flags(data, sd15, tmp_path / "out", 4))
    assert result.returncode != 0
    assert ("2 training pairs cannot fill one step of 2 process(es) x batch size 2 = 4 samples; lower --batch-size, "
            "use fewer processes or prepare more data") in result.stderr
    assert "Loading weights" not in result.stderr  # refused before SD 1.5 loaded
    assert not (tmp_path / "out").exists()
    assert time.time() - started < 120
