"""The `ggr-hf` dispatcher: exit codes, error lines, --verbose, help, and a quiet console."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

import ggr_hf.experiments.experiment as experiment
from ggr_hf.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_RUN_FAILED, EXIT_USAGE, main
from ggr_hf.cli.hub import find_card_inputs
from ggr_hf.errors import GGRDataError, GGRIncompleteRunWarning, GGRTrainingError

TINY = {
    "data": {
        "dataset": "synthetic",
        "split_k": 2,
        "synthetic": {"num_users": 50, "num_items": 60, "num_categories": 3, "min_len": 12, "max_len": 20},
    },
    "model": {
        "backbone_config": {"hidden_size": 16, "num_layers": 1, "max_seq_len": 12, "dropout": 0.0},
        "priors": [{"type": "item", "field": "genres"}],
        "num_negatives": 16,
    },
    "training": {"epochs": 2, "batch_size": 32, "checkpoint_every_epochs": 1},
}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_help_documents_the_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and "--verbose" in out
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"  {code}" in out
    for command in ("train", "evaluate", "recommend", "compare", "ablate", "data", "push", "card"):
        assert command in out


def test_every_command_has_help(capsys):
    for argv in (["data", "--help"], ["data", "prepare", "--help"], ["train", "--help"], ["card", "--help"]):
        assert main(argv) == 0, argv
    assert "--resume-from-checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trian"], "invalid choice: 'trian'"),
        (["train"], "the following arguments are required: --config"),
        (["train", "--config", "missing.yaml"], "experiment config missing.yaml does not exist"),
        (["data", "prepare", "merrec", "--raw", "nowhere", "--out", "o"], "nowhere"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_USAGE
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("ggr-hf: error: ") and message in lines[0]


def test_a_bad_value_in_the_config_is_exit_2(config, capsys):
    assert main(["train", "--config", str(config), "--set", "training.epochs=0"]) == EXIT_USAGE
    assert error_lines(capsys.readouterr().err) == [
        "ggr-hf: error: --set 'training.epochs=0': training.epochs must be >= 1, got 0"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "training.epochs=2.5"], "training.epochs must be an integer, got 2.5 (float)"),
        (
            ["--set", "training.selection_metric=ndcg@11"],
            "training.selection_metric 'ndcg@11' is not a metric",
        ),
        (["--set", "training.output_dir=[a"], "the value '[a' is not valid YAML"),
        (["--set", "training.epochs"], "must look like section.key=value"),
        (["--set", "trianing.epochs=3"], "unknown section 'trianing'"),
        (["--set", "model.fusion=median"], "model: GGRConfig.fusion must be one of"),
    ],
)
def test_config_errors_stop_before_any_data_is_loaded(config, capsys, monkeypatch, argv, message):
    def never(*args, **kwargs):
        raise AssertionError("the config should have been rejected before anything ran")

    monkeypatch.setattr(experiment, "launch_experiment", never)
    assert main(["train", "--config", str(config), *argv]) == EXIT_USAGE
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("ggr-hf: error: ") and message in lines[0]


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (GGRDataError("f.csv: column 'ts': value -1 is not a time"), EXIT_USAGE, "f.csv: column 'ts'"),
        (FileExistsError("o exists"), EXIT_USAGE, "ggr-hf: error: o exists"),
        (
            PermissionError(13, "Permission denied", "ro/m.json"),
            EXIT_USAGE,
            "ggr-hf: error: [Errno 13] Permission denied: 'ro/m.json'",
        ),
        (
            GGRTrainingError("step 12: the loss is nan; resume from checkpoint_0"),
            EXIT_RUN_FAILED,
            "ggr-hf: error: step 12: the loss is nan; resume from checkpoint_0",
        ),
        (KeyError("ndcg@10"), EXIT_FAILURE, "ggr-hf: error: KeyError: 'ndcg@10' (rerun with --verbose"),
    ],
)
def test_each_kind_of_error_has_its_exit_code(config, capsys, monkeypatch, error, code, line):
    def failing(cfg, test=True):
        raise error

    monkeypatch.setattr(experiment, "launch_experiment", failing)
    assert main(["train", "--config", str(config)]) == code
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and line in lines[0]


def test_an_unfinished_run_warning_is_one_line(config, capsys, monkeypatch):
    def warns(cfg, test=True):
        warnings.warn(
            "run/best: the training run in run did not finish", GGRIncompleteRunWarning, stacklevel=2
        )
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "launch_experiment", warns)
    assert main(["train", "--config", str(config)]) == EXIT_INTERRUPTED
    assert error_lines(capsys.readouterr().err) == [
        "ggr-hf: warning: run/best: the training run in run did not finish",
        "ggr-hf: interrupted",
    ]


def test_recommend_checks_its_flags_and_the_model_folder(tmp_path, capsys):
    assert main(["recommend", str(tmp_path), "--user", "1", "--k", "0"]) == EXIT_USAGE
    assert "argument --k: expected an integer >= 1, got '0'" in capsys.readouterr().err
    assert main(["recommend", str(tmp_path / "nowhere"), "--user", "1"]) == EXIT_USAGE
    assert error_lines(capsys.readouterr().err) == [
        f"ggr-hf: error: model folder {tmp_path / 'nowhere'} does not exist; pass a folder written by "
        "`ggr-hf train` (e.g. OUTPUT_DIR/best), or --config naming the data for a Hub model"
    ]
    assert main(["recommend", str(tmp_path), "--user", "1"]) == EXIT_USAGE
    assert f"{tmp_path} has no ggr_experiment.json" in capsys.readouterr().err


def test_other_failures_are_exit_1_with_a_hint_and_verbose_shows_the_traceback(config, capsys, monkeypatch):
    def broken(cfg, test=True):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(experiment, "launch_experiment", broken)
    assert main(["train", "--config", str(config)]) == EXIT_FAILURE
    lines = error_lines(capsys.readouterr().err)
    assert lines == [
        "ggr-hf: error: RuntimeError: the disk caught fire (rerun with --verbose for the traceback)"
    ]
    assert main(["--verbose", "train", "--config", str(config)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("ggr-hf: error: RuntimeError: the disk caught fire")


def test_ctrl_c_is_exit_130(config, capsys, monkeypatch):
    def interrupted(cfg, test=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "launch_experiment", interrupted)
    assert main(["train", "--config", str(config)]) == EXIT_INTERRUPTED
    assert error_lines(capsys.readouterr().err) == ["ggr-hf: interrupted"]


def test_train_prints_its_metrics_and_the_console_stays_quiet(config, tmp_path, capfd):
    out_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--output-dir", str(out_dir)]) == 0
    out, err = capfd.readouterr()
    printed = json.loads(out)
    assert printed["best_model"] == str(out_dir / "best")
    assert 0.0 <= printed["test"]["recall@10"] <= 1.0 and "ndcg@10" in printed["most_popular_test"]
    assert printed["train"]["steps"] > 0
    # Two checkpoints and the best model were saved, without one progress bar or log line each.
    assert len(list((out_dir / "checkpoints").iterdir())) == 2
    assert "Writing model shards" not in out + err
    assert "WARNING" not in out + err and "INFO" not in err

    # --verbose brings the logs back.
    assert (
        main(
            [
                "--verbose",
                "train",
                "--config",
                str(config),
                "--output-dir",
                str(tmp_path / "verbose_run"),
                "--no-test",
            ]
        )
        == 0
    )
    out, err = capfd.readouterr()
    assert "INFO ggr_hf.experiments.experiment: 1 process(es)" in err
    assert "INFO ggr_hf.training.loop: epoch 2: validation ndcg@10" in err
    assert "validation" in json.loads(out) and "test" not in json.loads(out)


def test_card_inputs_are_found_beside_the_model(tmp_path):
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    assert find_card_inputs(best) == {}
    (tmp_path / "run" / "results.json").write_text("{}")
    (best / "ggr_experiment.json").write_text("{}")
    (tmp_path / "run" / "accuracy_vs_diversity.png").write_bytes(b"png")
    (best / "head_contributions.png").write_bytes(b"png")
    assert find_card_inputs(best) == {
        "metrics": (tmp_path / "run" / "results.json").resolve(),
        "training_args": (best / "ggr_experiment.json").resolve(),
        "figures": {
            "Accuracy vs diversity": (tmp_path / "run" / "accuracy_vs_diversity.png").resolve(),
            "Head contributions": (best / "head_contributions.png").resolve(),
        },
    }
