"""`sparrow-llm eval`: metric wiring, the leave-last-out protocol (no leakage), the copy's embeddings,
and one small end-to-end run over a real host JVM on a copy of part of the fixture."""
import math
import re

import numpy as np
import pandas as pd
import pytest

from sparrow_llm import schema
from sparrow_llm.bridge.client import BridgeClient
from sparrow_llm.cli import main
from sparrow_llm.config import ConfigError
from sparrow_llm.evaluation.datacopy import build_movielens_webroot, read_embeddings, write_eval_copy
from sparrow_llm.evaluation.protocol import leave_last_out
from sparrow_llm.evaluation.report import Arm, Variant, score_lists, score_variant
from sparrow_llm.evaluation.run import available_rankers
from sparrow_llm.bridge.host import HostProcess
from sparrow_llm.registry import RANKERS, RERANKERS, ranker_names

from tests.conftest import host_settings

TINY_USERS = 40  # the first users of the fixture: enough for --sample 15 eligible ones
HISTORY = 50  # the end-to-end run's --history: some of its users have more
RATING_COLUMNS = [schema.COL_USER, schema.COL_MOVIE, schema.COL_RATING, schema.COL_TIMESTAMP]


def _ratings(rows):
    return pd.DataFrame(rows, columns=RATING_COLUMNS)


# ---- metrics -----------------------------------------------------------------------------------

def test_metrics_match_a_hand_computed_case():
    lists = {1: [10, 20, 30], 2: [5, 6, 7, 8, 9, 10], 3: [1, 2]}
    targets = {1: 10, 2: 8, 3: 99}  # rank 1, rank 4, missing
    scores = score_lists(lists, targets, seed=7)
    expected = {"HR@1": 1 / 3, "HR@5": 2 / 3, "HR@10": 2 / 3, "NDCG@5": (1 + 1 / math.log2(5)) / 3,
                "NDCG@10": (1 + 1 / math.log2(5)) / 3, "MRR": (1 + 1 / 4) / 3}
    assert set(scores) == set(expected)
    for name, value in expected.items():
        assert scores[name].mean == pytest.approx(value), name
        assert scores[name].low <= scores[name].mean <= scores[name].high
    assert scores == score_lists(lists, targets, seed=7)  # a fixed seed gives the same intervals


def test_variant_scores_pair_against_host_emb_and_count_top_10():
    targets = {1: 10, 2: 8}
    host = Arm("host-emb (filtered)", "host", {1: [3, 10], 2: [8, 4]})  # NDCG@10: 1/log2(3), 1
    plugin = Arm("recent", "item2vec", {1: [10, 3], 2: [4, 5]})  # NDCG@10: 1, 0
    variant = Variant("host", "t", "n", targets, [host, plugin])
    score_variant(variant, popularity={3: 100, 4: 90, 5: 1, 8: 1, 10: 1}, catalogue_size=10, seed=0)
    assert host.scores.delta is None
    assert plugin.scores.delta.mean == pytest.approx(((1 - 1 / math.log2(3)) + (0 - 1)) / 2)
    assert plugin.scores.coverage == pytest.approx(4 / 10)  # movies 10, 3, 4, 5
    # head = top 20% of 5 movies by ratings = {3}; slots 10, 3, 4, 5: three of four are long tail
    assert plugin.scores.long_tail == pytest.approx(3 / 4)


def test_rankers_come_from_the_registry(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(RANKERS, "another", "sparrow_llm.rankers.recent:from_settings")
    assert available_rankers() == ["host-rating", "host-emb", *ranker_names()]
    assert {"another", *RERANKERS} <= set(available_rankers())
    assert main(["eval", "--rankers", "host-emb,nope", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown ranker(s) nope; known: host-rating, host-emb, " in err and "clickprompt" in err


# ---- the protocol ------------------------------------------------------------------------------

def test_leave_last_out_hides_the_last_liked_movie_and_everything_from_then_on():
    ratings = _ratings([
        (1, 11, 4.0, 100), (1, 12, 2.0, 200), (1, 13, 5.0, 300), (1, 14, 4.0, 300),  # tie at 300: 14 hidden
        (1, 15, 3.0, 300), (1, 16, 1.0, 400),  # same second and later: dropped too
        (2, 21, 4.0, 100), (2, 22, 3.0, 200), (2, 21, 4.5, 300),  # a re-rating of the hidden movie
        (3, 31, 2.0, 100), (3, 32, 3.0, 200),  # nothing liked: nothing hidden, all kept
    ])
    reduced, holdouts = leave_last_out(ratings)
    assert {u: (h.movie_id, h.timestamp, h.history_size) for u, h in holdouts.items()} == {
        1: (14, 300, 2), 2: (21, 300, 1)}
    kept = sorted(map(tuple, reduced[[schema.COL_USER, schema.COL_MOVIE]].to_numpy()))
    assert kept == [(1, 11), (1, 12), (2, 22), (3, 31), (3, 32)]


def test_a_folder_without_item2vec_gets_one_trained_on_the_copy_only(tmp_path):
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{m},Movie {m} (2000),Drama\n" for m in range(1, 9)))
    (ml / "links.csv").write_text("movieId,imdbId,tmdbId\n" + "".join(f"{m},{m},{m}\n" for m in range(1, 9)))
    rows = [(u, m, 4.0, 10 * m) for u in (1, 2, 3) for m in (1, 2, 3, 4, 5, 6)]
    rows += [(u, 7, 5.0, 1000) for u in (1, 2, 3)]  # movie 7 is every user's hidden movie
    _ratings(rows).to_csv(ml / "ratings.csv", index=False)
    source = build_movielens_webroot(ml, tmp_path / "built")
    assert not (source / schema.ITEM_EMB_CSV).exists()

    copy = write_eval_copy(source, tmp_path / "copy", seed=1)
    assert {h.movie_id for h in copy.holdouts.values()} == {7} and copy.evaluated == [1, 2, 3]
    vectors = read_embeddings(tmp_path / "copy" / schema.ITEM_EMB_CSV)
    assert set(vectors) == {1, 2, 3, 4, 5, 6}  # nobody's training data liked movie 7
    assert all(v.shape == (10,) and np.isfinite(v).all() for v in vectors.values())
    write_eval_copy(source, tmp_path / "copy2", seed=1)
    again = read_embeddings(tmp_path / "copy2" / schema.ITEM_EMB_CSV)
    assert all(np.allclose(vectors[m], again[m]) for m in vectors)  # seeded


def _last_before(ratings: pd.DataFrame, user: int, n: int) -> list[int]:
    rows = ratings[ratings[schema.COL_USER] == user].sort_values([schema.COL_TIMESTAMP, schema.COL_MOVIE])
    return sorted(rows[schema.COL_MOVIE].tail(n))


def test_history_keeps_only_each_evaluated_users_last_ratings(tiny_source, tmp_path, capsys):
    full = write_eval_copy(tiny_source, tmp_path / "full", seed=3, sample=15)
    cut = write_eval_copy(tiny_source, tmp_path / "cut", seed=3, sample=15, history=3)
    # Eligibility on the full history: the same users (some with fewer than 5 ratings are never eligible).
    assert cut.eligible == full.eligible and cut.evaluated == full.evaluated and len(cut.evaluated) == 15
    assert min(full.holdouts[u].history_size for u in full.evaluated) > 3
    copied = pd.read_csv(tmp_path / "cut" / schema.RATINGS_CSV)
    before = full.ratings
    for user in copied[schema.COL_USER].unique():
        rows = copied[copied[schema.COL_USER] == user]
        if user in cut.evaluated:
            assert len(rows) == 3 == cut.holdouts[user].history_size
            assert sorted(rows[schema.COL_MOVIE]) == _last_before(before, user, 3)
        else:  # every other user keeps every rating the protocol keeps
            assert len(rows) == (before[schema.COL_USER] == user).sum()
    assert set(copied[schema.COL_USER]) == set(before[schema.COL_USER])
    source = pd.read_csv(tiny_source / schema.RATINGS_CSV)
    for user, (movie, ts) in _expected_holdouts(source).items():
        rows = copied[copied[schema.COL_USER] == user]
        assert movie not in set(rows[schema.COL_MOVIE]) and (rows[schema.COL_TIMESTAMP] < ts).all()
    # The host's user vectors follow the cut: the mean over the 3 movies kept.
    items = read_embeddings(tmp_path / "cut" / schema.ITEM_EMB_CSV)
    users = read_embeddings(tmp_path / "cut" / schema.USER_EMB_CSV)
    user = cut.evaluated[0]
    kept = copied.loc[copied[schema.COL_USER] == user, schema.COL_MOVIE]
    np.testing.assert_allclose(users[user], sum(items[m] for m in kept if m in items) / 3, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="--history must be >= 1"):
        write_eval_copy(tiny_source, tmp_path / "bad", history=0)
    assert main(["eval", "--history", "0", "--no-progress"]) == 2
    assert "argument --history: expected a number >= 1" in capsys.readouterr().err


# ---- end to end over the real host -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory, fixture_webroot):
    """The fixture with only its first users' ratings (the rest linked)."""
    root = tmp_path_factory.mktemp("tiny-webroot")
    for rel in (schema.MOVIES_CSV, schema.LINKS_CSV, schema.ITEM_EMB_CSV, "posters"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(fixture_webroot / rel)
    ratings = pd.read_csv(fixture_webroot / schema.RATINGS_CSV)
    ratings[ratings[schema.COL_USER] <= TINY_USERS].to_csv(root / schema.RATINGS_CSV, index=False)
    return root


@pytest.fixture(scope="module")
def evaluated(built_bridge, tiny_source, tmp_path_factory):
    """`sparrow-llm eval --sample 15 --rankers host-emb,recent --history 50` over the tiny source, through the
    CLI, with a relative --out as the default one is (the cold-start cut touches the evaluated users with longer
    histories)."""
    cwd = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--data", str(tiny_source), "--sample", "15", "--rankers", "host-emb,recent",
            "--history", str(HISTORY), "--out", "out", "--no-progress"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        assert main(argv) == 0
    return cwd / "out", argv


def _expected_holdouts(ratings: pd.DataFrame) -> dict[int, tuple[int, int]]:
    """The protocol as the README states it, written independently: user -> (hidden movie, timestamp)."""
    liked = ratings[ratings[schema.COL_RATING] >= 3.5].sort_values([schema.COL_TIMESTAMP, schema.COL_MOVIE])
    return {int(u): (int(g[schema.COL_MOVIE].iloc[-1]), int(g[schema.COL_TIMESTAMP].iloc[-1]))
            for u, g in liked.groupby(schema.COL_USER)}


def test_end_to_end_writes_a_table_row_per_ranker_with_intervals_and_a_chart(evaluated):
    out, argv = evaluated
    report = (out / "results.md").read_text()
    assert f"Command: `sparrow-llm {' '.join(argv)}`" in report.splitlines()[2]
    interval = r"\d\.\d{3} \[-?\d\.\d{3}, \d\.\d{3}\]"
    # popularity and ease are in every run, asked for or not.
    for variant, labels in (("## Host candidates", ("host-emb (as-is)", "host-emb (filtered)", "popularity", "ease",
                                                    "recent")),
                            ("## Sampled negatives", ("host-emb", "popularity", "ease", "recent"))):
        section = report.split(variant)[1].split("\n## ")[0]
        assert "15 users" in section or "users are left out" in section
        quality = [line for line in section.splitlines() if re.match(rf"\| [^|]+ \| {interval} +\|", line)]
        assert [line.split("|")[1].strip() for line in quality] == list(labels)
        assert all(len(re.findall(interval, line)) >= 6 for line in quality)
    assert "Recall-stage hit rate" in report and "recent: 15 users, 15 written" in report
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    per_user = pd.read_csv(out / "per_user.csv")
    assert per_user[per_user["variant"] == "host"].groupby("ranker").size().to_dict() == {
        "host-emb (as-is)": 15, "host-emb (filtered)": 15, "popularity": 15, "ease": 15, "recent": 15}
    # Segments: a table under each variant's, and each user's segments in per_user.csv, from the copy's history.
    copied = pd.read_csv(out / "work" / "data" / schema.RATINGS_CSV).groupby(schema.COL_USER).size()
    assert (per_user["history"] == per_user[schema.COL_USER].map(copied)).all() and per_user["history"].max() <= HISTORY
    assert set(per_user["history_band"]) <= {"≤ 20", "21–100"} and set(per_user["hidden_popularity"]) <= {"head", "tail"}
    segments = report.split("## Host candidates")[1].split("### Segments")[1].split("\n## ")[0]
    users = per_user[(per_user["variant"] == "host") & (per_user["ranker"] == "recent")]
    for band, count in users["history_band"].value_counts().items():
        assert re.search(rf"\| history {band}\s+\| {count}\s+\| recent\s+\| {interval}", segments)
    assert "No user in: history > 100." in segments
    assert report.count("### Segments") == 2  # the sampled table too
    # Training is part of the cost rows: seconds and peak memory of the preparation.
    assert re.search(r"\| ease\s+\| retrieval\s+\| \d+\.\d\s+\| \d\.\d\d \(\+\d\.\d\d\)\s+\|", report)


def test_the_hidden_movie_never_reaches_the_copy_or_the_host(evaluated, tiny_source, tmp_path):
    out, _ = evaluated
    source = pd.read_csv(tiny_source / schema.RATINGS_CSV)
    copied = pd.read_csv(out / "work" / "data" / schema.RATINGS_CSV)
    expected = _expected_holdouts(source)
    evaluated_users = pd.read_csv(out / "per_user.csv").query("variant == 'host'")
    hidden = dict(zip(evaluated_users[schema.COL_USER], evaluated_users[schema.COL_MOVIE]))
    assert len(hidden) == 15 and all(expected[u][0] == m for u, m in hidden.items())
    for user, (movie, ts) in expected.items():
        rows = copied[copied[schema.COL_USER] == user]
        assert movie not in set(rows[schema.COL_MOVIE]), f"user {user}'s hidden movie {movie} is in the copy"
        assert (rows[schema.COL_TIMESTAMP] < ts).all(), f"user {user} keeps ratings from {ts} on"
        before = ((source[schema.COL_USER] == user) & (source[schema.COL_TIMESTAMP] < ts)
                  & (source[schema.COL_MOVIE] != movie)).sum()
        assert len(rows) == (min(before, HISTORY) if user in hidden else before)
    assert any(len(copied[copied[schema.COL_USER] == u]) == HISTORY for u in hidden)  # the cut took effect
    # And the host over the copy (what every ranker reads through the bridge) never serves it.
    settings = host_settings(tmp_path).replace(host={"data_dir": out / "work" / "data"})
    with HostProcess(settings), BridgeClient(settings.bridge) as client:
        for user, movie in hidden.items():
            history = client.history(user)
            assert history.known and len(history.ratings) == (copied[schema.COL_USER] == user).sum() >= 5
            assert movie not in {r.movie_id for r in history.ratings}
            assert max(r.timestamp for r in history.ratings) < expected[user][1]


def test_user_embeddings_are_recomputed_from_the_reduced_history(evaluated, fixture_webroot):
    out, _ = evaluated
    data = out / "work" / "data"
    items = read_embeddings(data / schema.ITEM_EMB_CSV)
    users = read_embeddings(data / schema.USER_EMB_CSV)
    copied = pd.read_csv(data / schema.RATINGS_CSV)
    assert set(users) == set(copied[schema.COL_USER])
    plain_means = 0
    for user, rows in copied.groupby(schema.COL_USER):
        movies = list(rows[schema.COL_MOVIE])
        with_vec = [items[m] for m in movies if m in items]
        # The host's job: the sum of the rated movies' vectors over the number of rated movies.
        np.testing.assert_allclose(users[user], np.sum(with_vec, axis=0) / len(movies), rtol=1e-5, atol=1e-6)
        if len(with_vec) == len(movies):  # every rated movie has a vector: exactly their mean
            np.testing.assert_allclose(users[user], np.mean(with_vec, axis=0), rtol=1e-5, atol=1e-6)
            plain_means += 1
    assert plain_means > 0
    # Not the fixture's vectors, which were computed from every rating, hidden ones included.
    full = read_embeddings(fixture_webroot / schema.USER_EMB_CSV)
    evaluated_users = set(pd.read_csv(out / "per_user.csv")[schema.COL_USER])
    assert all(not np.allclose(users[u], full[u], atol=1e-4) for u in evaluated_users)
