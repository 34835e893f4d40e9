"""Distributed training: two gloo processes vs one, checkpoints and resume, launcher configs.

The two-process test launches `recipes/train.py` with `accelerate launch` and the DDP launcher
config (two gloo ranks on the CPU with `training.cpu: true`) and compares its weights with one
in-process run on the same global batch (2 x 8 windows vs 1 x 16) and the same negatives (one
process with `negative_draws: 2` draws exactly what two gathering processes draw together).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ggr_hf.experiments.config import experiment_config_from_dict
from ggr_hf.experiments.experiment import build_model, prepare_experiment, run_experiment, train_model
from ggr_hf.training.loop import latest_checkpoint
from tests.training.tiny import one_thread, tiny_experiment  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate_configs"

# Float32 sums over the batch in another order, and DDP's all-reduce, differ in the last bits: the
# measured difference after 4 steps is ~3e-8, against ~1e-2 when only the negatives differ.
TOLERANCE = 1e-5


def tiny_config(output_dir: Path, dropout: float = 0.0, **training) -> dict:
    return tiny_experiment(output_dir, dropout=dropout, **{"epochs": 1, "warmup_ratio": 0.0, **training})


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_model_one_process_trains(tmp_path):
    # 4 steps stay inside the first epoch (~70 windows): accelerate pads the last, short batch of
    # an epoch with windows from its start on every process, which one process does not do.
    # Warm-up on: accelerate steps the schedule once per process, which `train` accounts for.
    config = tiny_config(tmp_path / "ddp", max_steps=4, warmup_ratio=0.5)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(CONFIGS / "ddp.yaml"), "--num_processes", "2"),
        *("--main_process_port", str(free_port())),
        str(ROOT / "recipes" / "train.py"),
        *("--config", str(config_path), "--no-test"),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    # A clean exit: 0, not -6 (SIGABRT from a process group left alive at exit).
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "2 process(es)" in proc.stderr

    ckpt = tmp_path / "ddp" / "checkpoints" / "checkpoint_0"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    # Only the main process writes: one evaluation line, one results file.
    log = (tmp_path / "ddp" / "eval_log.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["step"] == 4
    assert json.loads((tmp_path / "ddp" / "results.json").read_text())["train"]["steps"] == 4
    two = load_file(str(ckpt / "model.safetensors"))

    cfg = experiment_config_from_dict(config).replace(
        training={"batch_size": 16, "negative_draws": 2, "output_dir": str(tmp_path / "one")}
    )
    exp = prepare_experiment(cfg)
    initial = build_model(exp, seed=cfg.training.seed).state_dict()
    run_experiment(cfg, exp=exp, test=False)
    one = load_file(str(tmp_path / "one" / "checkpoints" / "checkpoint_0" / "model.safetensors"))
    assert max_abs_diff(two, one) < TOLERANCE
    # The comparison means something: training moved the weights far more than the tolerance,
    # and other negatives (one draw of 8 instead of the two processes' 16) give another model.
    assert max_abs_diff(one, {k: initial[k] for k in one}) > 1e-3
    other = cfg.replace(training={"negative_draws": 1, "output_dir": str(tmp_path / "other")})
    run_experiment(other, exp=exp, test=False)
    different = load_file(str(tmp_path / "other" / "checkpoints" / "checkpoint_0" / "model.safetensors"))
    assert max_abs_diff(two, different) > 100 * TOLERANCE


@pytest.mark.parametrize("model_type", ["ggr", "remi"])
def test_the_train_command_runs_under_accelerate_launch(tmp_path, model_type):
    # `accelerate launch -m ggr_hf.cli train`: both ranks train, the main one evaluates and prints once,
    # and the run ends cleanly (exit 0, not SIGABRT from a process group left alive). A baseline (REMI:
    # hard negatives and routing regularisation) goes through the same command with no branch.
    config = tiny_config(tmp_path / "cli", max_steps=2, checkpoint_every_epochs=0)
    if model_type != "ggr":
        config["model"] = {**config["model"], "model_type": model_type, "num_interests": 2}
        del config["model"]["priors"]
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(CONFIGS / "ddp.yaml"), "--num_processes", "2"),
        *("--main_process_port", str(free_port())),
        *("-m", "ggr_hf.cli", "train", "--config", str(config_path)),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.stdout.count('"best_model"') == 1
    results = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert results["train"]["steps"] == 2 and "recall@10" in results["test"]
    assert (tmp_path / "cli" / "best" / "model.safetensors").is_file()


def test_resuming_from_a_checkpoint_continues_the_run(tmp_path):
    # Dropout on: the resumed run must also restore the RNG states.
    straight_cfg = experiment_config_from_dict(tiny_config(tmp_path / "straight", dropout=0.2, epochs=2))
    exp = prepare_experiment(straight_cfg)
    straight = train_model(build_model(exp, seed=0), exp, straight_cfg.training)
    ckpt = tmp_path / "straight" / "checkpoints"
    assert latest_checkpoint(tmp_path / "straight") == ckpt / "checkpoint_1"
    assert (ckpt / "checkpoint_0" / "best_model.safetensors").is_file()

    resumed_cfg = straight_cfg.replace(
        training={
            "output_dir": str(tmp_path / "resumed"),
            "resume_from_checkpoint": str(ckpt / "checkpoint_0"),
        }
    )
    resumed = train_model(build_model(exp, seed=0), exp, resumed_cfg.training)
    a = load_file(str(ckpt / "checkpoint_1" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "checkpoint_1" / "model.safetensors"))
    assert max_abs_diff(a, b) < TOLERANCE
    assert resumed.steps == straight.steps and resumed.history == straight.history
    assert (resumed.best_epoch, resumed.best_metric) == (straight.best_epoch, straight.best_metric)
    # The resumed run trained (and evaluated) only the second epoch.
    log = (tmp_path / "resumed" / "eval_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [2]


def test_resume_needs_a_complete_checkpoint(tmp_path):
    cfg = experiment_config_from_dict(tiny_config(tmp_path, resume_from_checkpoint="latest"))
    exp = prepare_experiment(cfg)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_model(build_model(exp, seed=0), exp, cfg.training)
    (tmp_path / "checkpoints" / "checkpoint_3").mkdir(parents=True)  # interrupted while saving
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_model(build_model(exp, seed=0), exp, cfg.training)
    with pytest.raises(ValueError, match="checkpoint_every_epochs"):
        experiment_config_from_dict(tiny_config(tmp_path, checkpoint_every_epochs=-1))


def test_checkpoints_are_numbered_by_accelerate_limited_and_overwritten_by_a_rerun(tmp_path):
    cfg = experiment_config_from_dict(tiny_config(tmp_path, epochs=3, save_total_limit=2))
    exp = prepare_experiment(cfg)
    train_model(build_model(exp, seed=0), exp, cfg.training)
    ckpt = tmp_path / "checkpoints"
    # accelerate's `total_limit` deleted the oldest of the three saves.
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint_1", "checkpoint_2"]
    assert latest_checkpoint(tmp_path) == ckpt / "checkpoint_2"
    assert json.loads((ckpt / "checkpoint_2" / "trainer_state.json").read_text())["epoch"] == 3
    # A second run into the same folder replaces the first run's checkpoints (accelerate alone
    # refuses an existing checkpoint folder).
    train_model(build_model(exp, seed=0), exp, cfg.replace(training={"epochs": 1}).training)
    assert json.loads((ckpt / "checkpoint_0" / "trainer_state.json").read_text())["epoch"] == 1
    with pytest.raises(ValueError, match="save_total_limit"):
        experiment_config_from_dict(tiny_config(tmp_path, save_total_limit=0))


@pytest.mark.parametrize(
    ("name", "distributed_type", "section"),
    [
        ("single", "NO", None),
        ("ddp", "MULTI_GPU", None),
        ("fsdp", "FSDP", "fsdp_config"),
        ("deepspeed_zero2", "DEEPSPEED", "deepspeed_config"),
    ],
)
def test_accelerate_configs_parse(name, distributed_type, section):
    from accelerate.commands.config.config_args import load_config_from_file

    path = CONFIGS / f"{name}.yaml"
    assert yaml.safe_load(path.read_text())["distributed_type"] == distributed_type
    # accelerate's own reader rejects unknown keys.
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == distributed_type
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_reshard_after_forward"]
    if name == "deepspeed_zero2":
        assert config.deepspeed_config["zero_stage"] == 2 and config.mixed_precision == "bf16"
    if section is None:
        assert not config.fsdp_config and not config.deepspeed_config


def test_seeded_negative_draws_concatenate_and_gather_is_a_no_op_on_one_process(tmp_path):
    from ggr_hf.losses import gather_negatives

    cfg = experiment_config_from_dict(tiny_config(tmp_path))
    model = build_model(prepare_experiment(cfg), seed=0)
    mask = model.head_item_mask()
    both = model._training_negatives(mask, torch.device("cpu"), seeds=[11, 12])
    first = model._training_negatives(mask, torch.device("cpu"), seeds=[11])
    second = model._training_negatives(mask, torch.device("cpu"), seeds=[12])
    assert both.shape == (model.num_heads, 2 * model.config.num_negatives)
    # Two processes with one draw each, gathered in rank order, score exactly these columns.
    assert torch.equal(both, torch.cat([first, second], dim=1))
    # In-group: every negative of a head is one of its items.
    assert bool(mask[both, torch.arange(model.num_heads).unsqueeze(1)].all())
    assert torch.equal(gather_negatives(both), both)
