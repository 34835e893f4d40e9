"""What a resume refuses (another model shape, batch size or data set, a damaged file), the
`--resume` / `--overwrite` flags, and numerical faults (a NaN loss stops the run, NaN weights are
never saved). The kill-and-resume runs are in tests/test_resume.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from ggr_hf.cli import build_parser, main
from ggr_hf.data.collator import TrainingWindows
from ggr_hf.errors import GGRCheckpointError, GGRConfigError, GGRFileNotFoundError, GGRTrainingError
from ggr_hf.experiments.config import experiment_config_from_dict
from ggr_hf.experiments.experiment import build_model, prepare_experiment, train_model
from ggr_hf.training.arguments import GGRTrainingArguments
from ggr_hf.training.checkpoints import TRAINER_STATE_NAME, latest_checkpoint
from tests.training.tiny import one_thread, tiny_experiment  # noqa: F401  (autouse fixture)


def tiny_config(output_dir: Path, hidden_size: int = 16, data_seed: int = 0, **training) -> dict:
    return tiny_experiment(
        output_dir, hidden_size=hidden_size, data_seed=data_seed, **{"epochs": 2, **training}
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A one-epoch run's checkpoint_0 (never modified: tests damage copies)."""
    out = tmp_path_factory.mktemp("first")
    cfg = experiment_config_from_dict(tiny_config(out, epochs=1))
    exp = prepare_experiment(cfg)
    train_model(build_model(exp, seed=0), exp, cfg.training)
    return out / "checkpoints" / "checkpoint_0"


def resume(tmp_path: Path, ckpt: Path, **changes):
    cfg = experiment_config_from_dict(
        tiny_config(tmp_path / "resumed", resume_from_checkpoint=str(ckpt), **changes)
    )
    exp = prepare_experiment(cfg)
    return train_model(build_model(exp, seed=0), exp, cfg.training)


def damaged_copy(tmp_path: Path, ckpt: Path) -> Path:
    copy = tmp_path / "copy" / "checkpoints" / ckpt.name
    shutil.copytree(ckpt, copy)
    return copy


def test_the_checkpoint_records_what_a_resume_must_keep(checkpoint):
    state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    assert state["batch_size"] == 8 and state["num_processes"] == 1
    assert state["data"]["num_windows"] > 0 and len(state["data"]["sha256"]) == 64
    assert state["model_shapes"] and all(isinstance(s, list) for s in state["model_shapes"].values())
    sizes = {p.name: p.stat().st_size for p in checkpoint.iterdir() if p.name != TRAINER_STATE_NAME}
    assert state["files"] == sizes and "optimizer.bin" in sizes and "best_model.safetensors" in sizes


def test_resume_refuses_another_batch_size(tmp_path, checkpoint):
    with pytest.raises(
        GGRCheckpointError, match=r"trainer_state\.json: written with training\.batch_size 8, this run has 16"
    ):
        resume(tmp_path, checkpoint, batch_size=16)


def test_resume_refuses_another_model_shape_before_loading(tmp_path, checkpoint):
    # Named from the recorded shapes, not met as torch's size-mismatch dump in load_state.
    with pytest.raises(
        GGRCheckpointError,
        match=r"another shape: 'backbone\..+' has shape \(.*16,?\) in the checkpoint, \(.*32,?\) here",
    ):
        cfg = experiment_config_from_dict(
            tiny_config(tmp_path / "resumed", hidden_size=32, resume_from_checkpoint=str(checkpoint))
        )
        exp = prepare_experiment(cfg)
        train_model(build_model(exp, seed=0), exp, cfg.training)


def test_resume_refuses_another_data_set(tmp_path, checkpoint):
    cfg = experiment_config_from_dict(
        tiny_config(tmp_path / "resumed", data_seed=1, resume_from_checkpoint=str(checkpoint))
    )
    exp = prepare_experiment(cfg)
    with pytest.raises(GGRCheckpointError, match="written for another data set"):
        train_model(build_model(exp, seed=0), exp, cfg.training)


@pytest.mark.parametrize("name", ["optimizer.bin", "model.safetensors", "random_states_0.pkl"])
def test_resume_names_a_truncated_file(tmp_path, checkpoint, name):
    copy = damaged_copy(tmp_path, checkpoint)
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(
        GGRCheckpointError, match=rf"{name}: \d+ bytes where the save wrote {len(data)} \(truncated\?\)"
    ):
        resume(tmp_path, copy)


def test_resume_names_a_corrupt_file_of_the_right_size(tmp_path, checkpoint):
    copy = damaged_copy(tmp_path, checkpoint)
    data = bytearray((copy / "optimizer.bin").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    (copy / "optimizer.bin").write_bytes(bytes(data))
    with pytest.raises(GGRCheckpointError, match=r"optimizer\.bin: cannot be read .*CRC"):
        resume(tmp_path, copy)


def test_resume_names_a_damaged_trainer_state_and_an_interrupted_save(tmp_path, checkpoint):
    copy = damaged_copy(tmp_path, checkpoint)
    (copy / TRAINER_STATE_NAME).write_text('{"epoch": 1, "st')
    with pytest.raises(GGRCheckpointError, match=r"trainer_state\.json: cannot be read"):
        resume(tmp_path, copy)
    (copy / TRAINER_STATE_NAME).unlink()
    assert latest_checkpoint(tmp_path / "copy") is None
    with pytest.raises(GGRCheckpointError, match="not a complete checkpoint"):
        resume(tmp_path, copy)
    with pytest.raises(GGRFileNotFoundError, match="no such checkpoint folder"):
        resume(tmp_path, tmp_path / "nowhere")


def test_an_unchanged_resume_passes_the_checks(tmp_path, checkpoint):
    result = resume(tmp_path, checkpoint)
    assert [r["epoch"] for r in result.history] == [1, 2]


def test_checkpoints_beyond_the_limit_go_once_the_new_one_is_complete(tmp_path):
    cfg = experiment_config_from_dict(tiny_config(tmp_path, epochs=3, save_total_limit=1))
    exp = prepare_experiment(cfg)
    train_model(build_model(exp, seed=0), exp, cfg.training)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_2"]
    assert not list((tmp_path / "checkpoints").rglob("*.tmp"))


def test_cli_resume_and_overwrite_flags(tmp_path, capsys):
    parser = build_parser()
    base = ["train", "--config", "c.yaml"]
    assert parser.parse_args([*base, "--resume"]).resume == "latest"
    assert parser.parse_args([*base, "--resume", "latest"]).resume == "latest"
    assert (
        parser.parse_args([*base, "--resume", "out/checkpoints/checkpoint_3"]).resume
        == "out/checkpoints/checkpoint_3"
    )
    # The earlier flag is an alias.
    assert parser.parse_args([*base, "--resume-from-checkpoint", "latest"]).resume == "latest"
    assert parser.parse_args(base).resume is None and not parser.parse_args(base).overwrite
    assert parser.parse_args([*base, "--overwrite"]).overwrite
    assert main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--resume [latest|PATH]" in help_text and "--overwrite" in help_text
    assert main([*base, "--resume", "--overwrite"]) == 2
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(GGRConfigError, match="overwrite_output_dir and training.resume_from_checkpoint"):
        GGRTrainingArguments(overwrite_output_dir=True, resume_from_checkpoint="latest")


def test_cli_resume_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "out")))
    assert main(["train", "--config", str(config), "--resume", "--no-test"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint under" in err and "Traceback" not in err
    # The config setting still works on its own.
    argv = ["train", "--config", str(config), "--set", "training.resume_from_checkpoint=latest", "--no-test"]
    assert main(argv) == 2
    assert "no checkpoint under" in capsys.readouterr().err


def forced_nan_loss(model, after_calls: int):
    """Makes the model's loss NaN from its `after_calls + 1`-th forward on."""
    forward, calls = model.forward, []

    def patched(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls.append(1)
        if len(calls) > after_calls:
            out.loss = out.loss * float("nan")
        return out

    model.forward = patched
    return model


def test_a_nan_loss_stops_the_run_naming_the_step_and_no_checkpoint(tmp_path):
    cfg = experiment_config_from_dict(tiny_config(tmp_path))
    exp = prepare_experiment(cfg)
    model = forced_nan_loss(build_model(exp, seed=0), after_calls=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        GGRTrainingError, match=r"training loss is nan at step 3 \(epoch 1\).*no checkpoint yet"
    ):
        train_model(model, exp, cfg.training)
    assert not (tmp_path / "best").exists() and latest_checkpoint(tmp_path) is None
    # Two good steps moved the weights; the NaN step did not reach them.
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_nan_loss_names_the_last_good_checkpoint(tmp_path):
    cfg = experiment_config_from_dict(tiny_config(tmp_path))
    exp = prepare_experiment(cfg)
    model = build_model(exp, seed=0)
    steps_per_epoch = math.ceil(len(TrainingWindows(exp.split, model.config.max_seq_len)) / 8)
    model = forced_nan_loss(model, after_calls=steps_per_epoch + 1)
    ckpt = tmp_path / "checkpoints" / "checkpoint_0"
    with pytest.raises(
        GGRTrainingError,
        match=rf"at step {steps_per_epoch + 2} \(epoch 2\).*last good checkpoint: {ckpt}",
    ):
        train_model(model, exp, cfg.training)


def test_nan_weights_are_never_saved_as_best(tmp_path):
    # The loss of the step is finite; a NaN gradient makes AdamW write NaN into the weights.
    cfg = experiment_config_from_dict(tiny_config(tmp_path, max_steps=1))
    exp = prepare_experiment(cfg)
    model = build_model(exp, seed=0)
    parameter = next(p for p in model.parameters() if p.requires_grad)
    parameter.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    with pytest.raises(
        GGRTrainingError, match=r"weights hold NaN or infinite values after step 1 \(epoch 1\)"
    ):
        train_model(model, exp, cfg.training)
    assert not (tmp_path / "best").exists() and latest_checkpoint(tmp_path) is None
    assert not (tmp_path / "eval_log.jsonl").exists()
