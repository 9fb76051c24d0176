"""The ClickPrompt rerank stage: a checkpoint per data folder, the ranker, the run_* paths, served over HTTP."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import urllib.request

import numpy as np
import pandas as pd
import pytest

from sparrow_llm.domain import MovieMeta, UserRating, spoken_title
from sparrow_llm.rankers.clickprompt import checkpoint as stage
from sparrow_llm.rankers.pretrained import WEIGHTS_FILE
from sparrow_llm.catalog import movie_catalog
from sparrow_llm.rankers.clickprompt.samples import SPLIT_NAMES, build_samples, read_sample_splits, time_split
from sparrow_llm.rankers.clickprompt.schema import COL_TIMESTAMP, COL_USER
from sparrow_llm.rankers.clickprompt.checkpoint import default_checkpoint, prepare_clickprompt, serving_checkpoint
from sparrow_llm.rankers.clickprompt.tuning import fusion_path, load_calibration, prepare
from sparrow_llm.rankers.fusion import WEIGHTS
from sparrow_llm.registry import make_base
from sparrow_llm.rankers.clickprompt.experiments import load_training_data, run_eval, run_finetune, run_pretrain
from sparrow_llm.rankers.clickprompt.ranker import BASE_WEIGHT, ORDER_WEIGHT, ClickPromptRanker, from_settings, why
from sparrow_llm.rankers.fusion import fuse
from sparrow_llm.rankers.clickprompt.model import ClickPrompt
from sparrow_llm.rankers.clickprompt.train import TABLE_ROWS, evaluate, train_table
from sparrow_llm.config import ConfigError, Settings
from sparrow_llm.domain import UserContext
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.store import open_default_store
from sparrow_llm.schema import MOVIES_CSV, RATINGS_CSV

UNSEEN = 10 ** 9  # a movie id no training split has


def _data_folder(root, ratings, sampledata):
    """A folder in the host's layout holding `ratings` and the fixture's movies.csv."""
    (root / "sampledata").mkdir(parents=True)
    ratings.to_csv(root / RATINGS_CSV, index=False)
    shutil.copyfile(sampledata / "movies.csv", root / MOVIES_CSV)
    return root


def _settings(root, ratings, sampledata) -> Settings:
    """Settings over a data folder of `ratings` with a work dir of its own."""
    return Settings().replace(host={"data_dir": _data_folder(root / "data", ratings, sampledata),
                                    "work_dir": root / "work"}, seed=3, base="popularity")


@pytest.fixture(scope="module")
def tiny_settings(tmp_path_factory, tiny_ratings, sampledata):
    return _settings(tmp_path_factory.mktemp("cp-stage"), tiny_ratings, sampledata)


@pytest.fixture(scope="module")
def micro_settings(tmp_path_factory, tiny_ratings, sampledata):
    """12 users: the run_* paths train every model once per seed, MiniLM included."""
    micro = tiny_ratings[tiny_ratings[COL_USER].isin(sorted(tiny_ratings[COL_USER].unique())[:12])]
    return _settings(tmp_path_factory.mktemp("cp-micro"), micro, sampledata)


@pytest.fixture(scope="module")
def trainings():
    """How many times prepare_clickprompt fine-tuned (module-wide, as the checkpoint is)."""
    return []


@pytest.fixture(scope="module")
def prepared(tiny_settings, trainings):
    """`prepare`'s line, with the quick recipe cut to a few PA-MLM steps (the real one runs ~60, ~2 s each)."""
    patch = pytest.MonkeyPatch()
    patch.setitem(stage.RECIPES, True, stage.Recipe("rank-after-pamlm-quick", 2, 64, finetune_epochs=2))
    real_finetune = stage.finetune
    patch.setattr(stage, "finetune", lambda *a, **k: trainings.append(1) or real_finetune(*a, **k))
    try:
        yield prepare(tiny_settings, False, make_base)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def checkpoint(prepared, tiny_settings):
    return default_checkpoint(tiny_settings)


@pytest.fixture(scope="module")
def movie_metas(movies) -> dict[int, MovieMeta]:
    catalog = movie_catalog(movies)
    metas = {int(m): MovieMeta(int(m), row.title, int(row.releaseYear) if pd.notna(row.releaseYear) else 0,
                               row.genres, 3.5, 10) for m, row in catalog.iterrows()}
    # Two movies the model never saw, alike in everything it reads: their scores tie exactly.
    for movie_id in (UNSEEN, UNSEEN + 1):
        metas[movie_id] = MovieMeta(movie_id, "Brand New", 2030, ("Drama",), 0.0, 0)
    return metas


@pytest.fixture(scope="module")
def ranker(checkpoint):
    """Click probabilities alone: the CTR model's whole weight, against the candidates' order."""
    return ClickPromptRanker(checkpoint, order_weight=1.0)


def _ctx(user_id, ratings, candidates, movies):
    return UserContext(user_id, tuple(UserRating(m, r, t) for m, r, t in ratings), tuple(candidates), movies)


def test_prepare_trains_once_per_data_content(prepared, checkpoint, tiny_settings, trainings, tiny_ratings,
                                              sampledata, tmp_path):
    assert prepared.startswith(f"clickprompt: trained {checkpoint} on ") and "validation: NDCG@10" in prepared
    assert checkpoint.parent.parent == tiny_settings.host.work_dir / stage.CHECKPOINTS_DIR
    info = json.loads((checkpoint / stage.TRAINING_FILE).read_text())
    assert info["data_folder"] == str(tiny_settings.host.data_webroot) and info["recipe"]["pretrain_steps"] == 2
    assert 0.0 <= info["valid_ndcg"] <= 1.0 and info["valid_users"] > 0  # trained to rank, validated on held-out users
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
    mtime = (checkpoint / WEIGHTS_FILE).stat().st_mtime_ns
    assert prepare_clickprompt(tiny_settings, progress=False) == checkpoint
    assert prepare(tiny_settings, False, make_base).startswith(f"clickprompt: reusing {checkpoint}; fusion weight ")
    assert len(trainings) == 1 and (checkpoint / WEIGHTS_FILE).stat().st_mtime_ns == mtime
    # Another ratings file (the eval harness's copy without hidden ratings) never finds this checkpoint...
    fewer = _data_folder(tmp_path / "fewer", tiny_ratings.iloc[:-1], sampledata)
    assert default_checkpoint(tiny_settings.replace(host={"data_dir": fewer})) != checkpoint
    # ...while the same content elsewhere does.
    same = _data_folder(tmp_path / "same", tiny_ratings, sampledata)
    assert default_checkpoint(tiny_settings.replace(host={"data_dir": same})) == checkpoint


def test_the_fusion_weight_is_chosen_over_the_base_on_validation_users_and_kept_per_base(prepared, checkpoint,
                                                                                          tiny_settings):
    assert re.search(r"fusion weight [0-9.]+ over popularity on \d+ validation users", prepared)
    base = make_base(tiny_settings)
    calibration = load_calibration(tiny_settings, checkpoint, base)
    assert calibration is not None and calibration.weight in WEIGHTS and calibration.samples > 10
    assert fusion_path(tiny_settings, checkpoint, base.version).is_file()
    # a weight > 0 only with a validation gain whose lower bound is above 0
    assert calibration.weight == 0.0 or calibration.gain[1] > 0
    served = from_settings(tiny_settings, None, base)
    assert served.base_weight == calibration.weight
    # Another base finds no weight of its own: the ranker serves that base's order (weight 0).
    other = make_base(tiny_settings.replace(base="ease"))
    assert load_calibration(tiny_settings, checkpoint, other) is None
    assert from_settings(tiny_settings, None, other).base_weight == 0.0
    assert from_settings(tiny_settings, None, other, weight=0.5).base_weight == 0.5


def test_factory_uses_the_data_folders_checkpoint_or_says_how_to_train(checkpoint, tiny_settings, tmp_path):
    ranker = from_settings(tiny_settings, None, None)
    assert ranker.checkpoint == checkpoint and ranker.backend == "clickprompt-ctr"
    assert (ranker.base_weight, ranker.order_weight) == (BASE_WEIGHT, ORDER_WEIGHT)
    assert from_settings(tiny_settings, None, None, weight=0.0).base_weight == 0.0
    assert ranker.version.startswith("rank-after-pamlm-quick-") and ranker.version == stage.checkpoint_version(checkpoint)
    with pytest.raises(ConfigError, match="sparrow-llm clickprompt pretrain"):
        from_settings(tiny_settings.replace(host={"work_dir": tmp_path}), None, None)


def test_ranks_unrated_candidates_by_click_probability(ranker, tiny_ratings, movie_metas):
    user = int(tiny_ratings[COL_USER].iloc[0])
    history = tiny_ratings[tiny_ratings[COL_USER] == user][["movieId", "rating", "timestamp"]].to_numpy()
    rated = [int(m) for m in history[:5, 0]]
    candidates = [*rated, 1, 2, 3, 32, 50, 260, 296, 318, 424_242]  # 424242: not a movie the host loads
    ranking = ranker.rank(_ctx(user, history, candidates, movie_metas))
    ids = [i.movie_id for i in ranking.items]
    assert sorted(ids) == sorted(set(candidates[5:-1]) - set(int(m) for m in history[:, 0]))
    scores = np.array([i.score for i in ranking.items])
    assert (np.diff(scores) <= 0).all() and len(set(scores)) > 1  # the model tells the candidates apart
    # The CTR model's whole weight: the order is the click probability's. Each reason says why in words: the liked
    # movie nearest by genres and the genres they share, else how the movie is rated here (all movies known to the
    # model: no "new to the model" note).
    liked = {spoken_title(movie_metas[int(m)]): movie_metas[int(m)] for m, r in history[:, :2]
             if r >= 3.5 and int(m) in movie_metas}
    for item in ranking.items:
        words = re.fullmatch(r"close to (.+), which you liked \((.+)\)", item.reason)
        if words:
            shared = set(words[2].split(", "))
            assert words[1] in liked and shared <= set(liked[words[1]].genres) & set(movie_metas[item.movie_id].genres)
        else:
            assert re.fullmatch(r"rated \d\.\d by \d+ people here", item.reason), item.reason
    assert "close to" in ranking.items[0].reason
    assert ranking.meta == {"history": len(history), "known_user": True, "scored": len(ids), "fused_with": "order",
                            "weight": 1.0}
    # rank_many gives each user what rank gives.
    other = _ctx(user + 1, [], [1, 2], movie_metas)
    assert ranker.rank_many([other, _ctx(user, history, candidates, movie_metas)]) == [ranker.rank(other), ranking]


def test_fused_with_the_base_scores_or_else_the_candidates_order(checkpoint, ranker, tiny_ratings, movie_metas):
    user = int(tiny_ratings[COL_USER].iloc[0])
    history = tiny_ratings[tiny_ratings[COL_USER] == user][["movieId", "rating", "timestamp"]].to_numpy()
    candidates = [m for m in sorted(movie_metas) if m not in set(history[:, 0]) and m < UNSEEN][:6]
    a, b, c, d, e, f = candidates
    base = {a: 0.1, b: 0.9, c: 0.5, d: 0.5, e: 0.7}  # f: not scored by the base, ranks as its lowest
    on_base = dataclasses.replace(_ctx(user, history, candidates, movie_metas), base_scores=base)
    plain = _ctx(user, history, candidates, movie_metas)
    probs = dict(zip(candidates, ranker.scorer.score_many([(user, plain.ratings, candidates)], movie_metas)[0]))
    only_base = ClickPromptRanker(checkpoint, base_weight=0.0).rank(on_base)
    assert [i.movie_id for i in only_base.items] == [b, e, c, d, a, f]  # ties (c, d; a, f) keep the order
    assert only_base.meta["fused_with"] == "base"
    liked = [movie_metas[int(m)] for m, r in history[::-1, :2] if r >= 3.5 and int(m) in movie_metas]
    assert [i.reason for i in only_base.items] == [why(movie_metas[i.movie_id], liked, probs[i.movie_id])
                                                   for i in only_base.items]
    half = ClickPromptRanker(checkpoint, base_weight=0.5).rank(on_base)
    p = np.array([probs[m] for m in candidates])
    want = fuse(np.log(p) - np.log(1 - p), np.array([base.get(m, 0.1) for m in candidates]), 0.5)
    assert len(set(np.round(want, 6))) == len(candidates)  # no tie: the order is the fused scores' alone
    assert [i.movie_id for i in half.items] == [candidates[i] for i in np.argsort(-np.round(want, 6), kind="stable")]
    np.testing.assert_allclose(sorted(i.score for i in half.items), sorted(want), atol=1e-4)  # probs shown rounded
    # Without base scores, the candidates' own order is the upstream ranking.
    only_order = ClickPromptRanker(checkpoint, order_weight=0.0).rank(_ctx(user, history, candidates, movie_metas))
    assert [i.movie_id for i in only_order.items] == candidates and only_order.meta["fused_with"] == "order"
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ClickPromptRanker(checkpoint, base_weight=1.5)


def test_new_user_and_unseen_movies(ranker, movie_metas):
    ranking = ranker.rank(_ctx(987_654_321, [], [UNSEEN + 1, 1, UNSEEN], movie_metas))
    assert {i.movie_id for i in ranking.items} == {UNSEEN, UNSEEN + 1, 1}
    assert ranking.meta["known_user"] is False and ranking.meta["history"] == 0
    new = [i for i in ranking.items if i.movie_id >= UNSEEN]
    assert all(i.reason.endswith("movie new to the model") for i in new)
    assert new[0].score == new[1].score and [i.movie_id for i in new] == [UNSEEN + 1, UNSEEN]  # tie: host order
    assert ranker.rank(_ctx(1, [(1, 4.0, 10)], [1], movie_metas)) is None  # nothing unrated to rank


def test_plm_variant_scores_with_the_text_model(prefix_add_run, movie_metas):
    with_plm = ClickPromptRanker(prefix_add_run.checkpoint, use_plm=True, max_candidates=3)
    ctr_only = ClickPromptRanker(prefix_add_run.checkpoint)
    ctx = _ctx(1, [(1, 5.0, 10)], [2, 3, 4, 5, 6], movie_metas)
    plm_ranking, ctr_ranking = with_plm.rank(ctx), ctr_only.rank(ctx)
    assert with_plm.backend == "clickprompt-plm" and ctr_only.backend == "clickprompt-ctr"
    assert sorted(i.movie_id for i in plm_ranking.items) == [2, 3, 4]  # the first host candidates only
    ctr_scores = {i.movie_id: i.score for i in ctr_ranking.items}
    assert any(i.score != ctr_scores[i.movie_id] for i in plm_ranking.items)


def test_features_folder_with_the_hosts_split_gets_a_validation_part(tiny_ratings, movies, tmp_path):
    split = time_split(build_samples(tiny_ratings, movies))
    for name, part in zip(SPLIT_NAMES, (pd.concat([split.train, split.valid]), split.valid.iloc[:0], split.test)):
        (tmp_path / name).mkdir()
        part.to_csv(tmp_path / name / "part-00000.csv", index=False)
    (tmp_path / "valid" / "part-00001.csv").write_text("")  # Spark's empty partition
    got = read_sample_splits(tmp_path)
    assert len(got.train) + len(got.valid) == len(split.train) + len(split.valid) and len(got.valid) > 0
    assert got.train[COL_TIMESTAMP].max() < got.valid[COL_TIMESTAMP].min() == got.valid_from
    pd.testing.assert_frame_equal(got.test, split.test)
    with pytest.raises(ValueError, match="no train/ folder"):
        read_sample_splits(tmp_path / "valid")


def test_cli_paths_pretrain_finetune_eval(micro_settings, tmp_path):
    quiet = dict(threads=1, progress=False)
    line = run_pretrain(micro_settings, tmp_path / "pre", max_steps=1, **quiet)
    assert line.startswith("pretrain (PA-MLM)") and (tmp_path / "pre" / WEIGHTS_FILE).is_file()
    line = run_finetune(micro_settings, tmp_path / "ctr", mode="ctr", init_from=tmp_path / "pre", epochs=1, **quiet)
    assert "test AUC" in line and ClickPromptRanker(tmp_path / "ctr").version.startswith("ctr-")
    with pytest.raises(ValueError, match="has none"):
        run_finetune(micro_settings, tmp_path / "x", mode="plm", init_from=tmp_path / "pre", **quiet)
    run_eval(micro_settings, tmp_path / "eval", seeds=(1, 2), epochs=1, max_steps=2, pretrain_steps=1, eval_every=1,
             patience=5, unfreeze_plm=True, train_frac=0.5, **quiet)
    table = (tmp_path / "eval" / "table.md").read_text()
    assert all(re.search(rf"^\| {re.escape(row)} +\|", table, re.M) for row in TABLE_ROWS) and " ± " in table
    results = pd.read_csv(tmp_path / "eval" / "results.csv")
    assert sorted(results["seed"].unique()) == [1, 2] and len(results) == 2 * len(TABLE_ROWS)
    first = results[results["seed"] == 1].set_index("model")
    assert list(first.index) == list(TABLE_ROWS) and list(first["fusion"]) == ["ctr", "plm", "prefix_add", "ctr"]
    assert results[["auc", "logloss", "us_per_sample"]].notna().all().all() and (results["us_per_sample"] > 0).all()
    params = first["params"]
    assert params["CTR-only"] == params["ClickPrompt CTR-only after PA-MLM"] < params["PLM-only"] < params["ClickPrompt (PLM)"]
    # The table's numbers are the checkpoints' own, on the whole test split.
    row = first.loc["ClickPrompt (PLM)"]
    model = ClickPrompt.from_pretrained(row["checkpoint"])
    test = load_training_data(micro_settings, model.config).split.test
    movies = pd.read_csv(micro_settings.host.data_webroot / MOVIES_CSV)
    assert row["n"] == len(test)
    assert row["auc"] == pytest.approx(evaluate(model, model.encode(test, movie_catalog(movies))).auc)
    with pytest.raises(ValueError, match="unknown table rows"):
        train_table(model.config, None, tmp_path / "x", rows=["XGBoost"])
    # MiniLM fine-tuned in the rows that read text: every parameter trains.
    text_rows = results[results["fusion"].isin(["plm", "prefix_add"])]
    assert (text_rows["trainable_params"] == text_rows["params"]).all()
    # Two steps validated after each: the text rows ran their capped epoch, whole.
    assert (text_rows["epochs"] == 1.0).all()
    assert (tmp_path / "eval" / "seed-2" / "pretrain" / WEIGHTS_FILE).is_file()


def test_served_by_the_host_stage(host, checkpoint, tiny_settings):
    ranker = ClickPromptRanker(checkpoint)
    summary = run_rerank(host.settings, "clickprompt", ranker=ranker, users=[1, 2, 3], progress=False)
    assert summary.written == 3 and summary.failed == 0
    record = open_default_store(host.settings).get_record("clickprompt", 1)
    assert record.backend == "clickprompt-ctr" and record.version == ranker.version
    with urllib.request.urlopen(f"{host.base_url}/getrecforyou?id=1&size=10&model=clickprompt", timeout=20) as resp:
        assert "source=store" in resp.headers.get("X-Sparrow-LLM", "")
        served = [m["movieId"] for m in json.loads(resp.read())]
    assert served == record.movie_ids[:10]
    # The CLI's score path is the same run, by default over the data folder's serving checkpoint.
    settings = host.settings.replace(host={"work_dir": tiny_settings.host.work_dir,
                                           "data_dir": tiny_settings.host.data_dir})
    scorer = ClickPromptRanker(serving_checkpoint(settings))
    line = run_rerank(settings, scorer.name, ranker=scorer, users=[4], progress=False).line()
    assert line.startswith("clickprompt: 1 users, 1 written, 0 skipped, 0 failed")
    assert open_default_store(host.settings).get_record("clickprompt", 4).version == ranker.version


def test_why_names_the_nearest_liked_movie_else_the_ratings_else_the_prediction():
    heat = MovieMeta(1, "Heat", 1995, ("Action", "Crime", "Thriller"), 3.9, 40)
    fargo = MovieMeta(2, "Fargo", 1996, ("Comedy", "Crime", "Drama", "Thriller"), 4.1, 50)
    casino = MovieMeta(3, "Casino", 1995, ("Crime", "Drama"), 3.8, 30)
    assert why(casino, [heat, fargo], 0.5) == "close to Fargo, which you liked (Crime, Drama)"  # two shared
    assert why(casino, [heat], 0.5) == "close to Heat, which you liked (Crime)"
    up = MovieMeta(4, "Up", 2009, ("Animation",), 4.0, 9)
    assert why(up, [heat, fargo], 0.5) == "rated 4.0 by 9 people here"
    assert why(MovieMeta(5, "New", 2024, ("Animation",), 0.0, 0), [heat], 0.51) == "a 51% chance you will like it, by your ratings so far"
