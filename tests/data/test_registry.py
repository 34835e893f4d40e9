"""The one data-set registry: names, `load_dataset_bundle`, and which sets `prepare_dataset` builds."""

from __future__ import annotations

import pytest

from ggr_hf.data.cache import prepare_dataset
from ggr_hf.data.registry import DATASETS, get_dataset_spec, load_dataset_bundle, preparable
from ggr_hf.data.synthetic import make_synthetic

from .test_movielens import write_grouplens


def test_registry_names_training_and_preparable_sets():
    assert {"ml-100k", "movielens", "synthetic", "bundle"} <= set(DATASETS)
    assert preparable() == ["ebnerd", "merrec", "pixelrec", "release"]
    assert get_dataset_spec("MerRec") is DATASETS["merrec"] and DATASETS["merrec"].preparable
    assert not DATASETS["synthetic"].preparable


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown data set 'nope'; known: bundle, ebnerd, merrec"):
        load_dataset_bundle("nope")


def test_synthetic_takes_its_options():
    bundle = load_dataset_bundle("synthetic", num_users=7, num_items=20, min_len=3, max_len=5)
    assert bundle.num_users == 7 and bundle.num_items == 20
    with pytest.raises(ValueError, match="data.path does not apply"):
        load_dataset_bundle("synthetic", "somewhere")


def test_movielens_reads_a_folder_and_requires_the_path(tmp_path):
    folder = write_grouplens(tmp_path / "ml")
    for name in ("movielens", "ml-100k"):
        bundle = load_dataset_bundle(name, folder)
        assert bundle.name == "ml-100k" and bundle.num_users == 4
    with pytest.raises(ValueError, match="data.path is required with data.dataset: movielens"):
        load_dataset_bundle("movielens")


def test_prepared_folders_open_as_bundle_and_by_their_name(tmp_path):
    make_synthetic(num_users=5, num_items=12, min_len=3, max_len=4).save_to_disk(tmp_path / "prepared")
    for name in ("bundle", "merrec"):
        assert load_dataset_bundle(name, tmp_path / "prepared").num_users == 5
    with pytest.raises(ValueError, match="data.path is required with data.dataset: bundle"):
        load_dataset_bundle("bundle")
    with pytest.raises(ValueError, match="min_events"):
        load_dataset_bundle("merrec", tmp_path / "prepared", min_events=3)
    with pytest.raises(FileNotFoundError, match="no bundle.json"):
        load_dataset_bundle("bundle", tmp_path)


def test_prepare_refuses_sets_that_are_not_prepared_from_raw_files(tmp_path):
    with pytest.raises(ValueError, match="synthetic is not prepared from raw files; preparable: ebnerd"):
        prepare_dataset("synthetic", tmp_path, tmp_path / "out")
