"""Property tests: random malformed configs, `--set` strings, command lines and `recommend()` inputs
end only in ggr-hf's documented exceptions (`GGRError` subclasses; argparse's exit 2), never in
another exception type. Bounded: a few dozen examples each, no deadline."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ggr_hf.experiments.experiment as experiment
from ggr_hf.cli import EXIT_INTERRUPTED, EXIT_USAGE, build_parser, main
from ggr_hf.errors import GGRError
from ggr_hf.experiments.config import DataArguments, experiment_config_from_dict, load_experiment_config
from ggr_hf.training.arguments import GGRTrainingArguments
from tests.conftest import tiny_model

# No example database: the runs leave no files behind in the working tree.
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

FIELDS = {
    "data": [f.name for f in dataclasses.fields(DataArguments)],
    "training": [f.name for f in dataclasses.fields(GGRTrainingArguments)],
    "model": ["backbone_type", "backbone_config", "priors", "fusion", "num_negatives", "composition"],
}

# Values as YAML or JSON could hold them; integers bounded (a split_k of 10**12 is not a test of
# the error rules but of memory).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["no", "bf16", "ndcg@10", "recall@5_h1", "1e-3", "item", "hstu", "max"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def configs(draw):
    d = {}
    for section in draw(st.lists(st.sampled_from([*FIELDS, "extra"]), max_size=3, unique=True)):
        if draw(st.booleans()):
            d[section] = draw(values)
            continue
        keys = draw(st.lists(st.sampled_from(FIELDS.get(section, ["x"])) | st.text(max_size=5), max_size=4))
        d[section] = {k: draw(values) for k in keys}
    return d


overrides = st.one_of(
    st.text(max_size=20),
    st.builds(
        lambda s, k, v: f"{s}.{k}={v}",
        st.sampled_from([*FIELDS, "x", ""]),
        st.sampled_from([k for ks in FIELDS.values() for k in ks] + ["nope", "a.b", ""]),
        st.text(max_size=10)
        | st.sampled_from(["[1", "{a: 1", "'x", "2.5", "0", "-1", "null", "no", "a: b: c"]),
    ),
)


@SETTINGS
@given(d=configs())
def test_random_config_dicts_raise_only_ggr_errors(d):
    with contextlib.suppress(GGRError):
        experiment_config_from_dict(d)


@SETTINGS
@given(text=st.text(max_size=60) | configs().map(yaml.safe_dump), sets=st.lists(overrides, max_size=3))
def test_random_yaml_files_and_overrides_raise_only_ggr_errors(tmp_path, text, sets):
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(GGRError):
        load_experiment_config(path, sets)


TOKENS = [
    "train", "evaluate", "recommend", "compare", "ablate", "data", "prepare", "push", "card",
    "--config", "--set", "--k", "--user", "--seeds", "--split-ks", "--output-dir", "--verbose",
    "--resume-from-checkpoint", "--no-test", "0", "-1", "x", "3", "training.epochs=2",
]  # fmt: skip


@SETTINGS
@given(argv=st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=6))
def test_random_command_lines_parse_or_exit_2(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code in (0, EXIT_USAGE), (argv, out.getvalue())


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data: {dataset: synthetic, split_k: 2}\ntraining: {epochs: 1}\n")
    return path


@SETTINGS
@given(sets=st.lists(overrides, min_size=1, max_size=3))
def test_train_with_random_overrides_is_exit_2_or_reaches_training(config_file, monkeypatch, sets):
    def interrupted(cfg, test=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "launch_experiment", interrupted)
    argv = ["train", "--config", str(config_file)]
    for item in sets:
        argv += [f"--set={item}"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    assert code in (EXIT_USAGE, EXIT_INTERRUPTED), out.getvalue()


MODEL = tiny_model()
item_values = st.one_of(
    st.integers(-3, 25),
    st.integers(-3, 25).map(np.int64),
    st.floats(-3, 25),
    st.text(max_size=2),
    st.none(),
    st.booleans(),
)
histories = st.one_of(
    st.lists(item_values, max_size=5),
    st.lists(st.lists(item_values, max_size=5), max_size=3),
    st.lists(st.integers(-2, 24), min_size=1, max_size=6).map(np.array),
)


@SETTINGS
@given(
    history=histories,
    k=st.one_of(st.integers(-2, 25), st.floats(-2, 25), st.booleans(), st.text(max_size=2)),
    timestamps=st.none() | st.lists(st.integers(0, 10**6) | st.floats(0, 10), max_size=5),
    exclude_history=st.sampled_from([None, True, False, "no"]),
)
def test_random_recommend_inputs_raise_only_ggr_errors(history, k, timestamps, exclude_history):
    with contextlib.suppress(GGRError):
        MODEL.recommend(history, k=k, timestamps=timestamps, exclude_history=exclude_history)
