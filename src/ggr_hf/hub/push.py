"""`push_model_to_hub`: a full GGR model or its heads, with an up-to-date model card, in one commit.

The files are written with `save_pretrained` / [`save_heads`] into a temporary folder (or taken from
a saved folder as they are), the card is rendered beside them, and one `HfApi.create_commit` uploads
them all. `create_commit` rather than `upload_folder`: a saved folder's model files are picked out of
a run folder (no logs, checkpoints or optimiser states) without copying them, and the upload stays
one commit whatever the folder's size.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ggr_hf import __version__
from ggr_hf.configuration_heads import HEADS_MODEL_TYPE, GGRHeadsConfig
from ggr_hf.errors import GGRFileNotFoundError, GGRInputError, GGRModelFolderError
from ggr_hf.hub.card import render_model_card
from ggr_hf.hub.io import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_model_weights,
    check_safetensors,
    looks_like_local_path,
    model_files,
    read_config_dict,
)
from ggr_hf.hub.loading import GGR_MODEL_TYPE, default_base, load_ggr, save_heads

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from ggr_hf.modeling_ggr import GGRForRecommendation

logger = logging.getLogger(__name__)


def _remote_card(api: HfApi, repo_id: str, revision: str | None) -> ModelCard | None:
    """The repo's current card at `revision`, so that pushing updates the card instead of replacing it.
    (`ModelCard.load(repo_id)` reads the default branch only.)"""
    try:
        path = api.hf_hub_download(repo_id=repo_id, filename=CARD_NAME, revision=revision)
        return ModelCard.load(path, ignore_metadata_errors=True)
    except (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    ) as err:
        logger.debug("no card on the Hub for %s yet (%s)", repo_id, err)
    except (HfHubHTTPError, OSError) as err:
        logger.warning("could not read the current card of %s (%s); writing a new one", repo_id, err)
    return None


def _folder_files(
    source: Path, heads_only: bool, base_model_name_or_path: str | None, tmp: Path
) -> dict[str, Path]:
    """The files to upload from a saved folder, after checking them (the heads config is rewritten
    into `tmp` when a Hub base is given)."""
    if not heads_only:
        check_model_weights(source)
        return {path.relative_to(source).as_posix(): path for path in model_files(source)}
    config = GGRHeadsConfig.from_dict(read_config_dict(source))  # validates it
    check_safetensors(source / WEIGHTS_NAME)
    files = {WEIGHTS_NAME: source / WEIGHTS_NAME, CONFIG_NAME: source / CONFIG_NAME}
    if base_model_name_or_path:
        config.base_model_name_or_path = base_model_name_or_path
        config.to_json_file(str(tmp / CONFIG_NAME))
        files[CONFIG_NAME] = tmp / CONFIG_NAME
    return files


def push_model_to_hub(
    model: GGRForRecommendation | str | os.PathLike,
    repo_id: str,
    heads_only: bool = False,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    card_data: dict[str, Any] | None = None,
    *,
    commit_description: str | None = None,
    create_pr: bool = False,
    base_model_name_or_path: str | None = None,
    max_shard_size: str | int | None = None,
    tags: list[str] | None = None,
) -> CommitInfo:
    """Uploads a full GGR model or its heads only, with an up-to-date model card, in one commit.

    Uses `HfApi.create_repo` (existing repos are fine), `HfApi.create_branch` for a `revision` that
    is not `main`, and one `HfApi.create_commit`. The card keeps the user-written notes of the
    folder's `README.md`, or of the repo's current card.

    Args:
        model: a [`GGRForRecommendation`], or a saved folder (full model or heads artifact). A
            folder's model files are uploaded as they are (after checking their headers).
        repo_id (`str`): `"namespace/name"`.
        heads_only (`bool`): upload the heads artifact (see [`save_heads`]) instead of the full model.
        private, token, revision, commit_message, commit_description, create_pr: as in `HfApi`.
        card_data (`dict`, *optional*): keyword arguments of [`ggr_hf.hub.card.render_model_card`]
            (`metrics`, `training_args`, `dataset_name`, `figures`, `base_model`, ...). The figures
            are uploaded beside the card.
        base_model_name_or_path (`str`, *optional*): heads only: the Hub id of the backbone they load
            onto (a local path would be useless to others).
        max_shard_size: passed to `save_pretrained` for a full model object.
        tags (`list[str]`, *optional*): extra tags for the card's metadata.

    Returns:
        `huggingface_hub.CommitInfo`.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise GGRInputError(
            f"repo_id {repo_id!r} is not a Hub model id ({' '.join(str(err).split())}); pass 'namespace/name'"
        ) from None
    api = HfApi(token=token)
    card_kwargs: dict[str, Any] = dict(card_data or {})
    card_kwargs.setdefault("repo_id", repo_id)
    if tags:
        card_kwargs["tags"] = [*card_kwargs.get("tags", []), *tags]
    source: Path | None = None
    model_object = model
    if isinstance(model, (str, os.PathLike)):
        source = Path(model)
        if not source.exists():
            raise GGRFileNotFoundError(f"model folder {source} does not exist: check the path")
        if not source.is_dir():
            raise GGRModelFolderError(
                f"{source} is a file, not a model folder: pass the folder holding config.json"
            )
        source_config = read_config_dict(source)
        source_type = source_config.get("model_type")
        # A baseline of the package (ComiRec, REMI, DualVAE, ...) carries a backbone sub-config.
        is_baseline = isinstance(source_config.get("backbone_config"), dict) and source_type != GGR_MODEL_TYPE
        if source_type == HEADS_MODEL_TYPE:
            heads_only = True
        elif is_baseline and heads_only:
            raise GGRInputError(
                f"{source} holds a {source_type!r} baseline, which has no heads; push it whole"
            )
        elif source_type != GGR_MODEL_TYPE and not is_baseline:
            raise GGRInputError(
                f"{source} holds a {source_type!r} model; push a ggr-hf recommendation model or GGR heads folder"
            )
        elif heads_only:  # the heads of a full folder: loaded, then saved like a model object
            model_object, source = load_ggr(source), None

    with tempfile.TemporaryDirectory(prefix="ggr-hf-push-") as tmp:
        staging = Path(tmp) / "repo"
        staging.mkdir()
        if source is not None:
            files = _folder_files(source, heads_only, base_model_name_or_path, staging)
            card_dir = source
        else:
            if heads_only:
                base = base_model_name_or_path or default_base(model_object)
                save_heads(model_object, staging, base_model_name_or_path=base, model_card=False)
            else:
                save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size is not None else {}
                model_object.save_pretrained(staging, **save_kwargs)
            files = {p.relative_to(staging).as_posix(): p for p in sorted(staging.rglob("*")) if p.is_file()}
            card_dir = staging

        if heads_only:
            base = json.loads(files[CONFIG_NAME].read_text()).get("base_model_name_or_path")
            if base and (looks_like_local_path(base) or Path(base).exists()):
                logger.warning(
                    "The heads' base_model_name_or_path %r is a local path; pass base_model_name_or_path=<hub "
                    "id> so that others can load them.",
                    base,
                )

        if "existing" not in card_kwargs:
            previous = source / CARD_NAME if source is not None else None
            if previous is None or not previous.is_file():
                previous = _remote_card(api, repo_id, revision)
            card_kwargs["existing"] = previous
        card = render_model_card(
            card_dir, config_path=files[CONFIG_NAME] if heads_only else None, **card_kwargs
        )
        files[CARD_NAME] = Path(tmp) / CARD_NAME
        files[CARD_NAME].write_text(str(card), encoding="utf-8")
        for path in (card_kwargs.get("figures") or {}).values():
            files[Path(path).name] = Path(path)

        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None and revision != "main":
            api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True, repo_type="model")
        what = "GGR heads" if heads_only else f"{read_config_dict(card_dir).get('model_type', 'ggr')} model"
        return api.create_commit(
            repo_id=repo_id,
            operations=[
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                for name, path in sorted(files.items())
            ],
            commit_message=commit_message or f"Upload {what} with ggr-hf {__version__}",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
