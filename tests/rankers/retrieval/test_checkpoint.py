"""Retrieval models are kept per data content, trained when missing, and say what training cost."""
import json

import pytest

from sparrow_llm import schema
from sparrow_llm.config import ConfigError
from sparrow_llm.datafolder import data_key
from sparrow_llm.rankers.retrieval.checkpoint import (CHECKPOINTS_DIR, TRAINING_FILE, is_checkpoint, prepare,
                                                      prepare_model)
from sparrow_llm.rankers.retrieval.samples import build_sequences
from sparrow_llm.registry import PREPARE_STEPS, prepare_model as registry_prepare

from .conftest import tiny_ratings


def test_a_model_is_kept_under_the_data_folders_content_key_and_reused(tiny_settings):
    path, trained = prepare_model(tiny_settings, "ease", progress=False)
    key = data_key(tiny_settings.host.data_webroot)
    assert trained and path == tiny_settings.host.work_dir / CHECKPOINTS_DIR / key / "ease" and is_checkpoint(path)
    info = json.loads((path / TRAINING_FILE).read_text())
    assert info["data_key"] == key and info["train_s"] > 0 and info["peak_gib"] > 0
    assert len(info["trials"]) == 6 and info["valid_users"] == 12  # the second fold has nobody: skipped
    assert 0 < info["valid_ndcg10"] == max(t["valid_ndcg10"] for t in info["trials"])
    assert prepare_model(tiny_settings, "ease", progress=False) == (path, False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ease"]  # no staging folder left behind

    # Other ratings: another key, another model; the first stays where it was.
    ratings = tiny_ratings()
    ratings.loc[0, schema.COL_RATING] = 1.0
    ratings.to_csv(tiny_settings.host.data_webroot / schema.RATINGS_CSV, index=False)
    other, trained = prepare_model(tiny_settings, "ease", progress=False)
    assert trained and other.parent.name == data_key(tiny_settings.host.data_webroot) != key
    assert is_checkpoint(path)


def test_the_registry_step_returns_one_line_and_samples_must_match_the_folder(tiny_settings, tmp_path):
    assert set(PREPARE_STEPS) >= {"popularity", "ease", "ease-recent", "sasrec"}
    line = registry_prepare("popularity", tiny_settings, progress=False)
    assert line.startswith("popularity: trained ") and "valid NDCG@10" in line and "\n" not in line
    assert registry_prepare("popularity", tiny_settings, progress=False).startswith("popularity: reusing ")
    build_sequences(tiny_ratings().head(20)).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ConfigError, match="not built from"):
        prepare(tiny_settings, False, model="ease", samples=tmp_path / "other.parquet")
    with pytest.raises(ConfigError, match="unknown retrieval model"):
        prepare_model(tiny_settings, "nope")
