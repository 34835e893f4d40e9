"""Heads-only artifacts, the loading dispatch and push_to_hub, with no network.

Pushes are recorded by replacing `HfApi`'s methods; Hub repo ids resolve through a fake
`snapshot_download` onto local folders laid out like Hub repos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import EntryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ggr_hf import hub
from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.configuration_heads import compute_vocab_fingerprint
from ggr_hf.hub import GGRHeadsConfig, load_ggr, load_heads_into, push_model_to_hub, save_heads
from ggr_hf.hub import io as hub_io
from ggr_hf.hub import loading as hub_loading
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
from ggr_hf.models.hstu.modeling_hstu import HSTUModel

FIXTURES = Path(__file__).parent / "fixtures" / "ggr_v0_1_0"
PRIORS = [{"type": "item", "field": "genres", "values": ["a", "b", "c"]}]
IDS = torch.tensor([[1, 2, 3, 0, 0], [4, 9, 11, 13, 2], [7, 0, 0, 0, 0]])
TIMES = torch.tensor([[10, 20, 35, 0, 0], [1, 5, 90, 91, 400], [3, 0, 0, 0, 0]])


def make_model(
    num_items: int = 20, hidden_size: int = 16, priors=PRIORS, seed: int = 0
) -> GGRForRecommendation:
    """A tiny GGR model with non-trivial heads (a zero-initialised head would hide load bugs)."""
    torch.manual_seed(seed)
    config = GGRConfig(
        num_items=num_items,
        backbone_config={"hidden_size": hidden_size, "max_seq_len": 8, "num_layers": 1},
        priors=priors,
        num_negatives=8,
    )
    model = GGRForRecommendation(config)
    if model.item_groups.num_priors:
        membership = torch.zeros(num_items + 1, 3, dtype=torch.bool)
        membership[1:, 0] = True
        membership[1::2, 1] = True
        membership[2::3, 2] = True
        model.set_item_groups("genres", membership)
    for param in model.heads.parameters():
        torch.nn.init.normal_(param, std=0.5)
    with torch.no_grad():
        model.logit_scale.fill_(7.5)
    return model.eval()


def scores(model: GGRForRecommendation) -> tuple[torch.Tensor, torch.Tensor]:
    return model.score_items(IDS, TIMES)


def assert_same_scores(a: GGRForRecommendation, b: GGRForRecommendation) -> None:
    sa, ia = scores(a)
    sb, ib = scores(b)
    assert torch.equal(sa, sb)
    assert torch.equal(ia, ib)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A safety net: any Hub call a test forgets to fake fails instead of reaching the network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def saved(tmp_path):
    """A model, its backbone folder and its heads folder (recording the backbone as base)."""
    model = make_model()
    backbone_dir = tmp_path / "backbone"
    model.backbone.save_pretrained(backbone_dir)
    heads_dir = save_heads(model, tmp_path / "heads", base_model_name_or_path=str(backbone_dir))
    return SimpleNamespace(model=model, backbone_dir=backbone_dir, heads_dir=heads_dir, root=tmp_path)


# ---------------------------------------------------------------------------------------------- save


def test_saved_heads_hold_no_backbone(saved):
    assert sorted(os.listdir(saved.heads_dir)) == ["README.md", "config.json", "model.safetensors"]
    with safe_open(str(saved.heads_dir / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    expected = {k for k in saved.model.state_dict() if not k.startswith("backbone.")}
    assert keys == expected
    assert not any(k.startswith("backbone.") for k in keys)
    assert "item_groups.prior_0" in keys and "logit_scale" in keys

    config = json.loads((saved.heads_dir / "config.json").read_text())
    assert config["model_type"] == "ggr_heads"
    assert config["head_names"] == ["a", "b", "c"]
    assert config["base_model_name_or_path"] == str(saved.backbone_dir)
    assert config["num_items"] == 20 and config["hidden_size"] == 16 and config["backbone_type"] == "hstu"
    assert config["vocab_fingerprint"] == compute_vocab_fingerprint("hstu", 20, 16)
    assert config["priors"][0]["values"] == ["a", "b", "c"]
    assert config["settings"]["num_negatives"] == 8
    assert config["ggr_hf_version"]


def test_heads_round_trip_through_their_base(saved):
    loaded = load_ggr(saved.heads_dir)
    assert isinstance(loaded, GGRForRecommendation)
    assert not loaded.training
    assert_same_scores(saved.model, loaded)
    assert loaded.config.num_negatives == 8


def test_heads_on_an_explicit_backbone_folder(saved):
    loaded = load_ggr(saved.backbone_dir, heads=saved.heads_dir)
    assert_same_scores(saved.model, loaded)


@pytest.mark.parametrize("composition", ["multiplicative", "hierarchical", "additive"])
def test_heads_round_trip_for_every_composition(tmp_path, composition):
    priors = [*PRIORS, {"type": "temporal", "segments": 2, "horizon": 2}]
    torch.manual_seed(0)
    config = GGRConfig(
        num_items=20,
        backbone_config={"hidden_size": 16, "max_seq_len": 8, "num_layers": 1},
        priors=priors,
        composition=composition,
        num_negatives=8,
    )
    model = GGRForRecommendation(config)
    membership = torch.zeros(21, 3, dtype=torch.bool)
    membership[1:, 0], membership[1::2, 1], membership[2::3, 2] = True, True, True
    model.set_item_groups("genres", membership)
    for param in model.heads.parameters():
        torch.nn.init.normal_(param, std=0.5)
    model.eval()
    model.backbone.save_pretrained(tmp_path / "backbone")
    save_heads(model, tmp_path / "heads", base_model_name_or_path=str(tmp_path / "backbone"))
    assert_same_scores(model, load_ggr(tmp_path / "heads"))
    hub.save_model(model, tmp_path / "full")
    assert_same_scores(model, load_ggr(tmp_path / "full"))


def test_a_relative_base_is_relative_to_the_heads_folder(saved, tmp_path, monkeypatch):
    save_heads(saved.model, tmp_path / "relative", base_model_name_or_path="../backbone", model_card=False)
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # where ../backbone does not exist
    assert_same_scores(saved.model, load_ggr(tmp_path / "relative"))


def test_heads_on_backbone_object(saved):
    backbone = HSTUModel.from_pretrained(saved.backbone_dir).eval()
    loaded = load_heads_into(backbone, saved.heads_dir)
    assert loaded.backbone is backbone
    assert_same_scores(saved.model, loaded)


def test_heads_on_full_model_with_the_same_priors_load_in_place(saved, tmp_path):
    other = make_model()
    other.load_state_dict(saved.model.state_dict())
    for param in other.heads.parameters():
        torch.nn.init.zeros_(param)
    other.save_pretrained(tmp_path / "full")
    full = load_ggr(tmp_path / "full")
    loaded = load_heads_into(full, saved.heads_dir)
    assert loaded is full
    assert_same_scores(saved.model, loaded)

    via_dispatch = load_ggr(tmp_path / "full", heads=saved.heads_dir)
    assert_same_scores(saved.model, via_dispatch)


def test_heads_on_full_model_with_other_priors_build_a_new_model(saved, tmp_path):
    baseline = make_model(priors=[])
    baseline.backbone.load_state_dict(saved.model.backbone.state_dict())
    baseline.save_pretrained(tmp_path / "baseline")
    loaded = load_ggr(tmp_path / "baseline", heads=saved.heads_dir)
    assert loaded.head_names == ["a", "b", "c"]
    assert_same_scores(saved.model, loaded)


def test_full_model_round_trip(tmp_path):
    model = make_model()
    hub.save_model(model, tmp_path / "full")
    assert sorted(os.listdir(tmp_path / "full")) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_ggr(tmp_path / "full")
    assert_same_scores(model, loaded)


def test_save_heads_refuses_a_model_folder(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "full")
    with pytest.raises(ValueError, match="holds a 'ggr' model"):
        save_heads(model, tmp_path / "full")
    assert sorted(os.listdir(tmp_path / "full")) == ["config.json", "model.safetensors"]


def test_save_heads_updates_an_earlier_artifact(saved):
    (saved.heads_dir / "notes.txt").write_text("mine")
    card = (saved.heads_dir / "README.md").read_text()
    marker = "<!-- ggr-hf:user-notes:start -->\n"
    (saved.heads_dir / "README.md").write_text(card.replace(marker, marker + "Keep me.\n"))
    retrained = make_model(seed=1)
    save_heads(retrained, saved.heads_dir, base_model_name_or_path=str(saved.backbone_dir))
    assert (saved.heads_dir / "notes.txt").read_text() == "mine"
    assert "Keep me." in (saved.heads_dir / "README.md").read_text()
    state = load_file(str(saved.heads_dir / "model.safetensors"))
    assert torch.equal(state["heads.levels.0.0.adapter.weight"], retrained.heads.levels[0][0].adapter.weight)
    assert not [p for p in saved.root.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_crash_while_saving_leaves_nothing_that_looks_complete(saved, monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub_loading, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_heads(saved.model, tmp_path / "new_heads")
    assert not (tmp_path / "new_heads").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new_heads")]


def test_a_crash_while_replacing_files_leaves_no_config(saved, monkeypatch):
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(hub_io.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="power cut"):
        save_heads(make_model(seed=2), saved.heads_dir, base_model_name_or_path=str(saved.backbone_dir))
    assert not (saved.heads_dir / "config.json").exists()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_ggr(saved.heads_dir)


# ---------------------------------------------------------------------------------------------- old formats


def _assert_expected_recommendations(model: GGRForRecommendation, expected: dict) -> None:
    rec = model.recommend(expected["histories"], k=expected["k"])
    assert rec.item_ids.tolist() == expected["item_ids"]
    torch.testing.assert_close(rec.scores, torch.tensor(expected["scores"]), atol=1e-5, rtol=1e-5)
    assert rec.head_names == expected["head_names"]


def test_a_v0_1_0_full_model_and_heads_artifact_load_and_recommend_as_saved():
    """Folders written by ggr-hf 0.1.0 (tests/fixtures/make_ggr_v0_1_0.py) load and give the same top-k."""
    expected = json.loads((FIXTURES / "expected.json").read_text())
    full = load_ggr(FIXTURES / "full")
    assert not full.training
    _assert_expected_recommendations(full, expected)
    # The heads record no base: they go on the full model's backbone, from its folder or as an object.
    _assert_expected_recommendations(load_ggr(FIXTURES / "full", heads=FIXTURES / "heads"), expected)
    backbone_only = load_ggr(FIXTURES / "full").backbone
    _assert_expected_recommendations(load_heads_into(backbone_only, FIXTURES / "heads"), expected)
    heads_config = GGRHeadsConfig.from_pretrained(FIXTURES / "heads")
    assert heads_config.head_names == full.head_names


def test_a_v0_1_0_heads_config_is_saved_in_the_same_format(tmp_path):
    old = json.loads((FIXTURES / "heads" / "config.json").read_text())
    GGRHeadsConfig.from_pretrained(FIXTURES / "heads").save_pretrained(tmp_path)
    new = json.loads((tmp_path / "config.json").read_text())
    assert new == old | {"transformers_version": new["transformers_version"]}


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("num_items", "hidden_size", "message"),
    [
        (21, 16, r"num_items \(item vocabulary\): heads 20, backbone 21"),
        (20, 32, r"hidden_size: heads 16, backbone 32"),
    ],
)
def test_heads_refuse_another_backbone(saved, tmp_path, num_items, hidden_size, message):
    other = HSTUModel(HSTUConfig(num_items=num_items, hidden_size=hidden_size, max_seq_len=8, num_layers=1))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match=message):
        load_ggr(tmp_path / "other", heads=saved.heads_dir)
    with pytest.raises(ValueError, match=message):
        load_heads_into(other, saved.heads_dir)


def test_heads_refuse_another_backbone_type(saved, monkeypatch):
    config = json.loads((saved.heads_dir / "config.json").read_text())
    config["backbone_type"] = "hllm"
    config["vocab_fingerprint"] = compute_vocab_fingerprint("hllm", 20, 16)
    (saved.heads_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="backbone type: heads 'hllm', backbone 'hstu'"):
        load_ggr(saved.backbone_dir, heads=saved.heads_dir)


def test_heads_refuse_another_item_vocabulary(tmp_path):
    model = make_model()
    items = [f"movie-{i}" for i in range(20)]
    save_heads(model, tmp_path / "heads", base_model_name_or_path="x/y", item_ids=items)
    with pytest.raises(ValueError, match="item vocabulary hash"):
        load_heads_into(model.backbone, tmp_path / "heads", item_ids=list(reversed(items)))
    assert_same_scores(model, load_heads_into(model.backbone, tmp_path / "heads", item_ids=items))


def test_a_hand_edited_fingerprint_is_an_error(saved):
    config = json.loads((saved.heads_dir / "config.json").read_text())
    config["num_items"] = 21  # without updating the fingerprint
    (saved.heads_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="vocab_fingerprint .* does not match its own fields"):
        load_ggr(saved.heads_dir)


def test_missing_head_keys_are_errors_unless_asked(saved):
    path = saved.heads_dir / "model.safetensors"
    state = load_file(str(path))
    del state["heads.levels.0.1.adapter.weight"]
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"missing keys \['heads.levels.0.1.adapter.weight'\]"):
        load_ggr(saved.heads_dir)
    loaded = load_ggr(saved.heads_dir, strict=False)
    # The missing head keeps its initial value (zero: the identity), not random numbers.
    assert torch.count_nonzero(loaded.heads.levels[0][1].adapter.weight) == 0


def test_unexpected_head_keys_are_errors(saved):
    path = saved.heads_dir / "model.safetensors"
    state = load_file(str(path))
    state["heads.levels.0.9.adapter.weight"] = torch.zeros(16, 16)
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"unexpected keys \['heads.levels.0.9.adapter.weight'\]"):
        load_ggr(saved.heads_dir)


def test_backbone_keys_in_a_heads_file_are_refused(saved):
    path = saved.heads_dir / "model.safetensors"
    state = load_file(str(path))
    state["backbone.item_embeddings.weight"] = torch.zeros(21, 16)
    save_file(state, str(path))
    with pytest.raises(ValueError, match="holds backbone keys"):
        load_ggr(saved.heads_dir)


def test_missing_full_model_keys_are_errors_unless_asked(tmp_path):
    make_model().save_pretrained(tmp_path / "full")
    path = tmp_path / "full" / "model.safetensors"
    state = load_file(str(path))
    del state["heads.levels.0.2.adapter.weight"]
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing_keys: \['heads.levels.0.2.adapter.weight'\]"):
        load_ggr(tmp_path / "full")
    assert isinstance(load_ggr(tmp_path / "full", strict=False), GGRForRecommendation)


@pytest.mark.parametrize("which", ["heads", "full"])
def test_corrupted_safetensors_is_named(saved, tmp_path, which):
    if which == "full":
        saved.model.save_pretrained(tmp_path / "full")
        folder = tmp_path / "full"
    else:
        folder = saved.heads_dir
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(OSError, match=f"{path}.*truncated or corrupted"):
        load_ggr(folder)


@pytest.mark.parametrize("which", ["heads", "full"])
def test_a_repo_without_weights_is_an_error(saved, tmp_path, which):
    if which == "full":
        saved.model.save_pretrained(tmp_path / "full")
        folder = tmp_path / "full"
    else:
        folder = saved.heads_dir
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_ggr(folder)


def test_a_config_from_a_newer_version_is_refused(saved, tmp_path):
    config = json.loads((saved.heads_dir / "config.json").read_text())
    config["ggr_hf_version"] = "9.0.0"
    config["head_dropout"] = 0.1
    (saved.heads_dir / "config.json").write_text(json.dumps(config))
    # `configuration_utils.reject_unknown_keys` names the writer's version before the fields.
    with pytest.raises(
        ValueError, match=r"\(written by ggr-hf 9.0.0\) got unknown field\(s\) \['head_dropout'\]"
    ):
        load_ggr(saved.heads_dir)

    saved.model.save_pretrained(tmp_path / "full")
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    config["head_dropout"] = 0.1
    (tmp_path / "full" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['head_dropout'\]"):
        load_ggr(tmp_path / "full")


def test_heads_without_a_base_need_an_explicit_backbone(saved, tmp_path):
    save_heads(saved.model, tmp_path / "orphan", base_model_name_or_path=None, model_card=False)
    # An in-memory model that was never loaded records no base.
    assert json.loads((tmp_path / "orphan" / "config.json").read_text())["base_model_name_or_path"] is None
    with pytest.raises(ValueError, match="records no base_model_name_or_path"):
        load_ggr(tmp_path / "orphan")
    assert_same_scores(saved.model, load_ggr(saved.backbone_dir, heads=tmp_path / "orphan"))


def test_a_backbone_alone_is_not_a_ggr_model(saved):
    with pytest.raises(ValueError, match="'hstu' backbone, not a GGR model"):
        load_ggr(saved.backbone_dir)


def test_a_missing_local_folder_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_ggr(str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------- Hub ids


def test_repo_ids_resolve_through_snapshot_download(saved, tmp_path, monkeypatch):
    """Folders laid out like Hub repos stand in for `user/hstu` and `user/heads`."""
    repos = {"user/hstu": saved.backbone_dir, "user/heads": tmp_path / "hub_heads"}
    save_heads(saved.model, repos["user/heads"], base_model_name_or_path="user/hstu")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision, kwargs.get("local_files_only")))
        return str(repos[repo_id])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = load_ggr("user/heads", revision="v1", local_files_only=True)
    assert_same_scores(saved.model, loaded)
    assert calls == [("user/heads", "v1", True), ("user/hstu", None, True)]

    calls.clear()
    loaded = load_ggr("user/hstu", heads="user/heads", revision="main", heads_revision="v2")
    assert_same_scores(saved.model, loaded)
    assert calls == [("user/hstu", "main", False), ("user/heads", "v2", False)]


# ---------------------------------------------------------------------------------------------- push


@pytest.fixture
def hub_api(monkeypatch, tmp_path):
    """Replaces HfApi's network methods and records what a push would upload."""
    record = SimpleNamespace(repos=[], branches=[], commits=[], remote_card=None)

    def create_repo(self, repo_id, **kwargs):
        record.repos.append((repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, **kwargs):
        record.branches.append((repo_id, branch))

    def create_commit(self, repo_id, operations, **kwargs):
        # The files live in a temporary folder during the call: read them now.
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        record.commits.append(SimpleNamespace(repo_id=repo_id, files=files, kwargs=kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1", pr_url=None)

    def hf_hub_download(self, repo_id, filename, **kwargs):
        if record.remote_card is None:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        path = tmp_path / "remote_README.md"
        path.write_text(record.remote_card)
        return str(path)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(HfApi, "hf_hub_download", hf_hub_download)
    return record


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def _materialise(files: dict[str, bytes], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_push_full_model_records_the_files_and_card(hub_api, tmp_path):
    model = make_model()
    metrics = {"recall@10": 0.05, "ndcg@10": 0.02, "split": "test"}
    push_model_to_hub(
        model,
        "user/ggr-tiny",
        private=True,
        revision="dev",
        commit_message="first",
        card_data={"metrics": metrics, "dataset_name": "ml-1m"},
    )
    assert hub_api.repos == [("user/ggr-tiny", {"private": True, "exist_ok": True, "repo_type": "model"})]
    assert hub_api.branches == [("user/ggr-tiny", "dev")]
    (commit,) = hub_api.commits
    assert sorted(commit.files) == ["README.md", "config.json", "model.safetensors"]
    assert commit.kwargs["commit_message"] == "first"
    assert commit.kwargs["revision"] == "dev"

    card = commit.files["README.md"].decode()
    meta = _front_matter(card)
    assert meta["library_name"] == "ggr-hf"
    results = meta["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"recall@10": 0.05, "ndcg@10": 0.02}
    assert 'GGRForRecommendation.from_pretrained("user/ggr-tiny")' in card

    uploaded = _materialise(commit.files, tmp_path / "uploaded")
    assert_same_scores(model, load_ggr(uploaded))


def test_push_heads_only_uploads_no_backbone(hub_api, saved, tmp_path):
    push_model_to_hub(saved.model, "user/ggr-heads", heads_only=True, base_model_name_or_path="user/hstu")
    (commit,) = hub_api.commits
    assert sorted(commit.files) == ["README.md", "config.json", "model.safetensors"]
    uploaded = _materialise(commit.files, tmp_path / "uploaded")
    with safe_open(str(uploaded / "model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if k.startswith("backbone.")]  # noqa: SIM118
    config = json.loads(commit.files["config.json"])
    assert config["model_type"] == "ggr_heads" and config["base_model_name_or_path"] == "user/hstu"
    meta = _front_matter(commit.files["README.md"].decode())
    assert meta["base_model"] == "user/hstu"
    assert "ggr-heads" in meta["tags"]
    assert commit.kwargs["revision"] is None and hub_api.branches == []
    assert_same_scores(saved.model, load_ggr(saved.backbone_dir, heads=uploaded))


def test_push_a_saved_folder_uses_its_results_and_keeps_notes(hub_api, tmp_path):
    model = make_model()
    folder = hub.save_model(model, tmp_path / "run" / "best")
    (tmp_path / "run" / "best" / "eval_results.json").write_text(
        json.dumps({"recall@10": 0.25, "ndcg@10": 0.125})
    )
    (tmp_path / "run" / "best" / "optimizer.pt").write_bytes(b"not uploaded")
    (tmp_path / "run" / "best" / "ema.safetensors").write_bytes(b"not uploaded either")
    card = (folder / "README.md").read_text()
    marker = "<!-- ggr-hf:user-notes:start -->\n"
    (folder / "README.md").write_text(card.replace(marker, marker + "Trained on a laptop.\n"))

    push_model_to_hub(
        folder,
        "user/from-folder",
        card_data={"dataset_name": "ml-100k", "metrics": folder / "eval_results.json"},
    )
    (commit,) = hub_api.commits
    assert sorted(commit.files) == ["README.md", "config.json", "model.safetensors"]
    card = commit.files["README.md"].decode()
    assert "Trained on a laptop." in card
    metrics = _front_matter(card)["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"recall@10": 0.25, "ndcg@10": 0.125}


def test_push_heads_only_from_a_full_folder(hub_api, tmp_path):
    model = make_model()
    folder = hub.save_model(model, tmp_path / "best")
    push_model_to_hub(folder, "user/heads", heads_only=True, base_model_name_or_path="user/hstu")
    (commit,) = hub_api.commits
    assert sorted(commit.files) == ["README.md", "config.json", "model.safetensors"]
    state_keys = set(load_file(str(_materialise(commit.files, tmp_path / "up") / "model.safetensors")))
    assert state_keys == {k for k in model.state_dict() if not k.startswith("backbone.")}


def test_push_a_heads_folder_with_a_hub_base(hub_api, saved):
    push_model_to_hub(saved.heads_dir, "user/heads", base_model_name_or_path="user/hstu")
    (commit,) = hub_api.commits
    assert sorted(commit.files) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads(commit.files["config.json"])["base_model_name_or_path"] == "user/hstu"
    assert commit.files["model.safetensors"] == (saved.heads_dir / "model.safetensors").read_bytes()
    assert _front_matter(commit.files["README.md"].decode())["base_model"] == "user/hstu"


def test_push_uploads_the_figures_of_the_card(hub_api, tmp_path):
    plot = tmp_path / "accuracy_vs_diversity.png"
    plot.write_bytes(b"\x89PNG plot")
    push_model_to_hub(make_model(), "user/figures", card_data={"figures": {"Accuracy vs diversity": plot}})
    (commit,) = hub_api.commits
    assert sorted(commit.files) == [
        "README.md",
        "accuracy_vs_diversity.png",
        "config.json",
        "model.safetensors",
    ]
    assert commit.files["accuracy_vs_diversity.png"] == b"\x89PNG plot"
    assert "![Accuracy vs diversity](accuracy_vs_diversity.png)" in commit.files["README.md"].decode()


def test_push_updates_the_card_already_on_the_hub(hub_api):
    hub_api.remote_card = (
        "---\nlicense: mit\n---\n# old\n<!-- ggr-hf:user-notes:start -->\nWritten on the Hub."
        "\n<!-- ggr-hf:user-notes:end -->\n"
    )
    push_model_to_hub(make_model(), "user/existing")
    card = hub_api.commits[0].files["README.md"].decode()
    assert "Written on the Hub." in card
    assert _front_matter(card)["license"] == "mit"


# ---------------------------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from ggr_hf.cli import main  # the one `ggr-hf` dispatcher, wherever its hub commands live

    return main(argv)


def test_cli_card_and_push(hub_api, tmp_path, capsys):
    model = make_model()
    model.save_pretrained(tmp_path / "best")
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"recall@10": 0.5, "entropy@10": 1.25}))
    assert _cli(["card", str(tmp_path / "best"), "--metrics", str(metrics), "--dataset", "ml-1m"]) == 0
    meta = _front_matter((tmp_path / "best" / "README.md").read_text())
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == "ml-1m"

    assert _cli(["push", str(tmp_path / "best"), "--repo-id", "user/cli", "--heads-only", "--private"]) == 0
    (commit,) = hub_api.commits
    assert sorted(commit.files) == ["README.md", "config.json", "model.safetensors"]
    assert hub_api.repos[0][1]["private"] is True
    assert "pushed" in capsys.readouterr().out


def test_cli_reports_errors(tmp_path, capsys):
    from ggr_hf.cli import EXIT_USAGE

    # A missing model folder is bad input: the CLI's one convention (see `ggr-hf --help`).
    assert _cli(["card", str(tmp_path / "missing")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "ggr-hf: error" in err and f"{tmp_path / 'missing'}" in err


def test_heads_config_rebuilds_the_ggr_config(saved):
    config = GGRHeadsConfig.from_pretrained(saved.heads_dir)
    rebuilt = config.to_ggr_config("hstu", saved.model.backbone.config)
    assert rebuilt.priors == saved.model.config.priors
    assert rebuilt.to_dict() == saved.model.config.to_dict() | {"_name_or_path": rebuilt._name_or_path}
