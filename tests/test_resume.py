"""A `ggr-hf train` process killed with SIGKILL, during an epoch and during a checkpoint write, and
resumed with `ggr-hf train --resume`, ends with the weights of the uninterrupted run (bit-identical:
one process on the CPU, one thread, dropout on).

Each run is a subprocess started through a small wrapper (`RUNNER`) that calls `ggr_hf.cli.main`
after installing a pause: at the third training step after `checkpoint_0` is complete (during
epoch 2), or while the completeness marker of `checkpoint_1` is being written (half of it in the
temporary file). The wrapper writes a flag file and sleeps; the test waits for the flag and kills
the process, so the moment of the kill is exact, not a race.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ggr_hf.training.checkpoints import TRAINER_STATE_NAME, latest_checkpoint
from tests.training.tiny import tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 240

RUNNER = """
import os
import sys
import time
from pathlib import Path

import ggr_hf.training.checkpoints as checkpoints
import ggr_hf.training.loop as loop
from ggr_hf.cli import main

flag, where = Path(os.environ["PAUSE_FLAG"]), os.environ.get("PAUSE_AT")
out_dir = Path(sys.argv[sys.argv.index("--output-dir") + 1])


def pause():
    flag.write_text("paused")
    time.sleep(600)


if where == "epoch":
    derive_seed, after_checkpoint = loop.derive_seed, []

    def derive_seed_then_pause(*keys):
        # Called once per training step (for the negatives' seed), with (seed, step, draw).
        if len(keys) == 3 and (out_dir / "checkpoints" / "checkpoint_0" / "trainer_state.json").is_file():
            after_checkpoint.append(keys[1])
            if len(after_checkpoint) == 3:
                pause()
        return derive_seed(*keys)

    loop.derive_seed = derive_seed_then_pause
elif where == "checkpoint":
    write = checkpoints._write_json_atomic

    def half_written_marker(path, payload):
        if path.parent.name == "checkpoint_1":
            text = str(payload)
            path.with_name(path.name + ".tmp").write_text(text[: len(text) // 2])
            pause()
        write(path, payload)

    checkpoints._write_json_atomic = half_written_marker

sys.exit(main(sys.argv[1:]))
"""


def tiny_config(output_dir: Path) -> dict:
    return tiny_experiment(output_dir, dropout=0.2, epochs=3)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume")
    (path / "runner.py").write_text(RUNNER)
    (path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(path / "unused")))
    return path


def command(workdir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(workdir / "runner.py"),
        *("train", "--config", str(workdir / "tiny.yaml"), "--output-dir", str(out), "--no-test"),
        *extra,
    ]


def environment(flag: Path, pause_at: str | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "PAUSE_FLAG": str(flag)}
    env.pop("PAUSE_AT", None)
    if pause_at:
        env["PAUSE_AT"] = pause_at
    return env


def run_to_the_end(workdir: Path, out: Path, *extra: str) -> None:
    proc = subprocess.run(
        command(workdir, out, *extra),
        cwd=workdir,
        env=environment(workdir / "unused.flag", None),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def run_and_kill(workdir: Path, out: Path, pause_at: str) -> None:
    """Starts a run that pauses at `pause_at`, waits for the pause and kills it with SIGKILL."""
    flag = workdir / f"{out.name}.flag"
    proc = subprocess.Popen(
        command(workdir, out),
        cwd=workdir,
        env=environment(flag, pause_at),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not flag.exists():
            if proc.poll() is not None:
                pytest.fail(f"the run ended ({proc.returncode}) before pausing: {proc.stderr.read()[-5000:]}")
            assert time.monotonic() < deadline, "the run did not reach the pause"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def final_weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "last": load_file(str(out / "checkpoints" / "checkpoint_2" / "model.safetensors")),
        "best": load_file(str(out / "best" / "model.safetensors")),
    }


def assert_identical(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> None:
    for which in a:
        assert a[which].keys() == b[which].keys()
        for name in a[which]:
            assert torch.equal(a[which][name], b[which][name]), (which, name)


def eval_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(workdir) -> Path:
    out = workdir / "straight"
    run_to_the_end(workdir, out)
    return out


def test_a_run_killed_during_an_epoch_resumes_to_the_same_weights(workdir, straight):
    out = workdir / "killed_in_epoch"
    run_and_kill(workdir, out, "epoch")
    assert latest_checkpoint(out) == out / "checkpoints" / "checkpoint_0"
    assert not (out / "checkpoints" / "checkpoint_1").exists()
    run_to_the_end(workdir, out, "--resume")
    assert_identical(final_weights(straight), final_weights(out))
    assert eval_log(out) == eval_log(straight)


def test_a_run_killed_during_a_checkpoint_write_resumes_to_the_same_weights(workdir, straight):
    out = workdir / "killed_in_checkpoint"
    run_and_kill(workdir, out, "checkpoint")
    interrupted = out / "checkpoints" / "checkpoint_1"
    # Every file of the save is there but the marker: `latest` must not pick the folder.
    assert (interrupted / "model.safetensors").is_file() and (interrupted / "optimizer.bin").is_file()
    assert not (interrupted / TRAINER_STATE_NAME).exists()
    assert latest_checkpoint(out) == out / "checkpoints" / "checkpoint_0"
    # The killed run had evaluated epoch 2 before the save: the resumed run drops and redoes it.
    assert [r["epoch"] for r in eval_log(out)] == [1, 2]
    run_to_the_end(workdir, out, "--resume", "latest")
    assert_identical(final_weights(straight), final_weights(out))
    assert eval_log(out) == eval_log(straight)
    assert (interrupted / TRAINER_STATE_NAME).is_file()
