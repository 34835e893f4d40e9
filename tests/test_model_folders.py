"""Model folders load only what they should, and say what is wrong when they cannot: a missing
(relative) path named as a path, pickled weights refused with the way to convert them, a heads
folder naming its missing base, a config whose shapes disagree with its weights. No network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from ggr_hf.cli import EXIT_USAGE, main
from ggr_hf.errors import GGRFileNotFoundError, GGRInputError, GGRModelFolderError
from ggr_hf.hub import load_ggr, save_heads
from ggr_hf.hub.io import looks_like_local_path
from ggr_hf.modeling_ggr import GGRForRecommendation
from tests.test_hub import assert_same_scores, make_model


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Any Hub download a test does not expect fails loudly (and nothing reaches the network)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def unexpected(repo_id, **kwargs):
        raise AssertionError(f"snapshot_download({repo_id!r}) was called")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unexpected)


@pytest.fixture
def full(tmp_path) -> Path:
    model = make_model()
    model.save_pretrained(tmp_path / "full")
    return tmp_path / "full"


# ---------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", ["./x", "x/y/z", "outputs/run/best", "outputs/best", "../gone", "~/no/such"])
def test_a_missing_relative_path_is_named_as_a_missing_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()  # `outputs/best`: `outputs` is a local folder, so this is a path
    assert looks_like_local_path(name)
    with pytest.raises(GGRFileNotFoundError, match=rf"^model folder {name} does not exist"):
        GGRForRecommendation.from_pretrained(name)


def test_a_name_that_is_neither_a_folder_nor_a_hub_repo_names_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_local_path("user/model")

    def not_cached(repo_id, **kwargs):
        raise LocalEntryNotFoundError("Cannot find the requested files in the local cache.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    with pytest.raises(GGRFileNotFoundError) as err:
        load_ggr("user/model")
    message = str(err.value)
    assert "model folder user/model does not exist" in message and str(tmp_path / "user" / "model") in message
    assert "not a Hub repo that could be fetched (LocalEntryNotFoundError" in message
    assert "\n" not in message


def test_a_file_is_not_a_model_folder(full):
    with pytest.raises(GGRModelFolderError, match="model.safetensors is a file, not a model folder"):
        load_ggr(full / "model.safetensors")


def test_a_folder_without_a_config_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GGRFileNotFoundError, match=f"{tmp_path / 'empty'} has no config.json"):
        load_ggr(tmp_path / "empty")


def test_the_cli_names_a_missing_model_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["evaluate", "outputs/run/best"],
        ["card", "outputs/run/best"],
        ["push", "outputs/run/best", "--repo-id", "u/m"],
    ):
        assert main(argv) == EXIT_USAGE
        err = capsys.readouterr().err.strip()
        assert err == "ggr-hf: error: model folder outputs/run/best does not exist: check the path"


# ---------------------------------------------------------------------------------------------- pickles


def _pickle_only(folder: Path) -> Path:
    """`folder` with its safetensors weights replaced by the pickle an old save would hold."""
    state = GGRForRecommendation.from_pretrained(folder).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_a_pickle_only_folder_is_refused_with_the_way_to_convert_it(full):
    _pickle_only(full)
    with pytest.raises(GGRModelFolderError) as err:
        GGRForRecommendation.from_pretrained(full)
    message = str(err.value)
    assert f"{full} holds only pickled weights (pytorch_model.bin)" in message
    assert "torch.load(" in message and "weights_only=True" in message and "save_pretrained" in message
    assert "\n" not in message

    # The way out the message gives works and loads the same model.
    state = torch.load(full / "pytorch_model.bin", weights_only=True)
    converted = GGRForRecommendation(GGRForRecommendation.config_class.from_pretrained(full))
    converted.load_state_dict(state)
    converted.save_pretrained(full)
    assert_same_scores(converted.eval(), GGRForRecommendation.from_pretrained(full))


def test_a_pickle_beside_safetensors_is_never_unpickled(full, monkeypatch):
    torch.save({"anything": torch.zeros(1)}, full / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    assert isinstance(GGRForRecommendation.from_pretrained(full), GGRForRecommendation)
    with pytest.raises(GGRInputError, match="use_safetensors=False: ggr-hf loads safetensors only"):
        GGRForRecommendation.from_pretrained(full, use_safetensors=False)


def test_a_pickle_only_backbone_under_heads_is_refused(tmp_path):
    model = make_model()
    model.backbone.save_pretrained(tmp_path / "backbone")
    heads = save_heads(model, tmp_path / "heads", base_model_name_or_path=str(tmp_path / "backbone"))
    state = model.backbone.state_dict()
    torch.save(state, tmp_path / "backbone" / "pytorch_model.bin")
    (tmp_path / "backbone" / "model.safetensors").unlink()
    with pytest.raises(GGRModelFolderError, match="holds only pickled weights"):
        load_ggr(heads)


# ---------------------------------------------------------------------------------------------- heads


def test_heads_whose_base_is_gone_name_the_heads_folder_and_the_base(tmp_path):
    model = make_model()
    model.backbone.save_pretrained(tmp_path / "backbone")
    heads = save_heads(model, tmp_path / "heads", base_model_name_or_path=str(tmp_path / "backbone"))
    shutil.rmtree(tmp_path / "backbone")
    with pytest.raises(GGRFileNotFoundError) as err:
        GGRForRecommendation.from_pretrained(heads)
    message = str(err.value)
    assert f"the heads folder {heads} needs its base model '{tmp_path / 'backbone'}'" in message
    assert f"base_model_name_or_path in {heads / 'config.json'}" in message
    assert f"model folder {tmp_path / 'backbone'} does not exist" in message
    assert "from_pretrained(backbone, heads=" in message and "\n" not in message


def test_heads_whose_relative_base_is_gone_name_it(tmp_path, monkeypatch):
    model = make_model()
    heads = save_heads(model, tmp_path / "heads", base_model_name_or_path="outputs/run/best")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        GGRFileNotFoundError, match=f"the heads folder {heads} needs its base model 'outputs/run/best'"
    ):
        load_ggr(heads)


def test_heads_keep_recording_their_hub_base(tmp_path, monkeypatch):
    model = make_model()
    model.backbone.save_pretrained(tmp_path / "hub_backbone")
    heads = save_heads(model, tmp_path / "heads", base_model_name_or_path="user/hstu")
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(tmp_path / "hub_backbone")
    )
    loaded = load_ggr(heads)
    assert loaded._ggr_base_model_name_or_path == "user/hstu"
    assert_same_scores(model, loaded)


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("edit", "named", "shape"),
    [
        ({"num_items": 25}, "num_items=25", "of shape (21, 16), the config gives (26, 16)"),
        ({"hidden_size": 32}, "hidden_size=32", "of shape (16,), the config gives (32,)"),
    ],
)
def test_a_config_edited_against_its_weights_names_both(full, edit, named, shape):
    path = full / "config.json"
    config = json.loads(path.read_text())
    config["backbone_config"].update(edit)
    config.update({k: v for k, v in edit.items() if k in config})
    path.write_text(json.dumps(config))
    with pytest.raises(GGRModelFolderError) as err:
        GGRForRecommendation.from_pretrained(full)
    message = str(err.value)
    assert message.startswith(f"{path} (") and named in message
    assert f"{full / 'model.safetensors'} holds " in message
    assert shape in message
    assert "\n" not in message


def test_a_backbone_config_edited_against_its_weights_names_both(tmp_path):
    model = make_model()
    model.backbone.save_pretrained(tmp_path / "backbone")
    heads = save_heads(model, tmp_path / "heads", base_model_name_or_path=str(tmp_path / "backbone"))
    path = tmp_path / "backbone" / "config.json"
    config = json.loads(path.read_text())
    config["num_items"] = 30
    path.write_text(json.dumps(config))
    with pytest.raises(GGRModelFolderError, match=rf"{path} \(num_items=30, hidden_size=16.*\(21, 16\)"):
        load_ggr(heads)
