"""Output folders that cannot lie: a run refuses a folder holding another run unless asked, publishes
its files with a completeness marker written last, and the model of an unfinished (or mixed) run is
refused by `evaluate`, `card` and `push` and loads with a warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import yaml

import ggr_hf.experiments.experiment as experiment
from ggr_hf.cli import EXIT_USAGE, main
from ggr_hf.errors import GGRIncompleteRunWarning, GGRInputError
from ggr_hf.experiments.config import experiment_config_from_dict
from ggr_hf.experiments.runner import run_seeds
from ggr_hf.hub.loading import save_model
from ggr_hf.hub.runs import RUN_COMPLETE_NAME, RUN_STARTED_NAME, run_status
from ggr_hf.modeling_ggr import GGRForRecommendation
from tests.test_hub import make_model

TINY = {
    "data": {
        "dataset": "synthetic",
        "split_k": 2,
        "synthetic": {"num_users": 40, "num_items": 50, "num_categories": 3, "min_len": 10, "max_len": 16},
    },
    "model": {
        "backbone_config": {"hidden_size": 16, "num_layers": 1, "max_seq_len": 10, "dropout": 0.0},
        "priors": [{"type": "item", "field": "genres"}],
        "num_negatives": 8,
    },
    "training": {"epochs": 1, "batch_size": 32, "progress": False},
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _killed_after_the_first_save(monkeypatch) -> None:
    """The experiment's training loop saves `best/` as the real one does, then the process dies."""

    def train(model, train_dataset, args, evaluate, **kwargs):
        save_model(model, Path(args.output_dir) / "best", model_card=False)
        raise KeyboardInterrupt  # what a kill looks like from inside the run

    monkeypatch.setattr(experiment, "train", train)


def _train(config: Path, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(config), "--output-dir", str(out), *extra])


# ---------------------------------------------------------------------------------------------- refusal


def test_a_non_empty_output_folder_is_refused_before_the_data_is_loaded(
    config, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(experiment, "prepare_experiment", lambda *a, **k: pytest.fail("data loaded"))
    assert _train(config, out) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ggr-hf: error: training.output_dir {out} is not empty (it holds notes.txt): pass --overwrite "
        "(training.overwrite_output_dir: true) to replace the earlier run, --resume "
        "(training.resume_from_checkpoint) to continue it, or choose another folder"
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_an_output_folder_that_is_a_file_is_refused(config, tmp_path, capsys):
    (tmp_path / "run").write_text("a file")
    assert _train(config, tmp_path / "run") == EXIT_USAGE
    assert f"training.output_dir {tmp_path / 'run'} is a file, not a folder" in capsys.readouterr().err


def test_the_seed_runner_checks_every_folder_before_training(tmp_path, monkeypatch):
    cfg = experiment_config_from_dict(TINY)
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seed1" / "results.json").write_text("{}")
    monkeypatch.setattr(
        "ggr_hf.experiments.runner.run_experiment_with_model", lambda *a, **k: pytest.fail("trained")
    )
    with pytest.raises(GGRInputError, match=f"training.output_dir {tmp_path / 'seed1'} is not empty"):
        next(run_seeds(cfg, None, [0, 1], tmp_path, label="x"))


# ---------------------------------------------------------------------------------------------- a finished run


def test_a_finished_run_publishes_its_files_with_a_marker_written_last(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(config, out) == 0
    marker = json.loads((out / RUN_COMPLETE_NAME).read_text())
    assert {"finished", "ggr_hf_version", "files"} <= set(marker)
    assert sorted(marker["files"]) == [
        "best/config.json",
        "best/ggr_experiment.json",
        "best/model.safetensors",
        "results.json",
    ]
    assert (out / RUN_STARTED_NAME).is_file() and (out / "best" / "README.md").is_file()
    # No temporary file of an atomic write is left behind.
    assert not [p for p in out.rglob(".*") if "tmp" in p.name]
    assert run_status(out / "best") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", GGRIncompleteRunWarning)
        GGRForRecommendation.from_pretrained(out / "best")
    # `ggr-hf card` updates the card of a finished run; the run still reads as finished.
    assert main(["card", str(out / "best")]) == 0
    assert run_status(out / "best") is None

    # Weights changed after the run finished are not the run's result.
    make_model(num_items=50).save_pretrained(tmp_path / "other")
    (out / "best" / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    assert "changed after the run" in run_status(out / "best")
    capsys.readouterr()
    assert main(["evaluate", str(out / "best")]) == EXIT_USAGE
    assert "--allow-incomplete" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- killed runs


def test_a_killed_run_is_refused_by_evaluate_card_and_push_and_loads_with_a_warning(
    config, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    _killed_after_the_first_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(
            experiment_config_from_dict({**TINY, "training": {**TINY["training"], "output_dir": str(out)}})
        )
    best = out / "best"
    assert (best / "model.safetensors").is_file() and not (out / RUN_COMPLETE_NAME).exists()
    assert "did not finish" in run_status(best)

    with pytest.warns(GGRIncompleteRunWarning, match=f"the training run in {out} did not finish"):
        GGRForRecommendation.from_pretrained(best)

    capsys.readouterr()
    for argv in (["evaluate", str(best)], ["card", str(best)], ["push", str(best), "--repo-id", "u/m"]):
        assert main(argv) == EXIT_USAGE, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{best}: the training run in {out} did not finish" in err[0]
        assert "--allow-incomplete" in err[0]

    # Asked for, evaluate runs (the experiment file was never written: --config names the data).
    # The CLI shows the GGRIncompleteRunWarning as one line, as it shows errors.
    assert main(["evaluate", str(best), "--allow-incomplete", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "recall@10" in json.loads(captured.out)
    warned = [line for line in captured.err.splitlines() if line.startswith("ggr-hf: warning:")]
    assert len(warned) == 1 and f"the training run in {out} did not finish" in warned[0]


def test_a_second_run_killed_in_a_finished_runs_folder_leaves_no_mixture(
    config, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    assert _train(config, out) == 0
    first = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    assert {"results.json", "best/ggr_experiment.json", "best/README.md"} <= first

    # Without --overwrite the folder is refused, and the finished run is untouched.
    capsys.readouterr()
    assert _train(config, out) == EXIT_USAGE
    assert {p.relative_to(out).as_posix() for p in out.rglob("*")} == first
    assert run_status(out / "best") is None

    # With --overwrite the old run's files go first; killed after its first save, the new run
    # leaves its weights alone, never beside the old experiment file, card and results.
    _killed_after_the_first_save(monkeypatch)
    assert _train(config, out, "--overwrite") != 0
    left = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    assert left == {RUN_STARTED_NAME, "best", "best/config.json", "best/model.safetensors"}
    capsys.readouterr()
    assert main(["evaluate", str(out / "best"), "--config", str(config)]) == EXIT_USAGE
    assert "did not finish" in capsys.readouterr().err


def test_a_resumed_run_reads_unfinished_until_it_completes(config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    checkpointed = ["--set", "training.checkpoint_every_epochs=1", "--set", "training.epochs=2"]
    assert _train(config, out, *checkpointed) == 0
    finished = json.loads((out / RUN_COMPLETE_NAME).read_text())["finished"]

    seen = []
    real_train = experiment.train

    def train(model, train_dataset, args, evaluate, **kwargs):
        seen.append(run_status(out / "best"))
        return real_train(model, train_dataset, args, evaluate, **kwargs)

    monkeypatch.setattr(experiment, "train", train)
    # Resuming is not refused by the non-empty folder, and the folder reads unfinished meanwhile.
    assert _train(config, out, *checkpointed, "--resume", str(out / "checkpoints" / "checkpoint_0")) == 0
    assert len(seen) == 1 and "did not finish" in seen[0]
    assert run_status(out / "best") is None
    assert json.loads((out / RUN_COMPLETE_NAME).read_text())["finished"] >= finished


# ---------------------------------------------------------------------------------------------- --output


def test_evaluate_output_must_be_a_file_path(tmp_path, capsys):
    model_dir = tmp_path / "model"
    make_model().save_pretrained(model_dir)
    assert main(["evaluate", str(model_dir), "--output", str(tmp_path)]) == EXIT_USAGE
    assert f"--output {tmp_path} is a folder: pass a file name" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert main(["evaluate", str(model_dir), "--output", str(tmp_path / "afile" / "m.json")]) == EXIT_USAGE
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
