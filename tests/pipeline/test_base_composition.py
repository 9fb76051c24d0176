"""A reranker over a base ranker (`BaseRanker.base`): `rank_contexts` gives it the base's top K, and the
record is its order of those, then the rest of the base's ranking; users the base cannot rank keep the
host's candidates. The base is the real `popularity` model of a tiny data folder."""
from typing import Sequence

import pytest

from sparrow_llm.config import Settings, StoreSettings
from sparrow_llm.domain import RankedItem, Ranking, UserContext, UserRating
from sparrow_llm.pipeline.rerank import RerankSummary, base_ranker, rank_contexts
from sparrow_llm.rankers.base import BaseRanker
from sparrow_llm.store import open_store

from tests.rankers.retrieval.conftest import tiny_ratings, write_folder

HOST_CANDIDATES = (7, 5, 4, 3, 2, 1, 6, 8)  # the host's order: every movie of the tiny folder


class Reverser(BaseRanker):
    """Reverses its candidates (so the composition's order is visible) and keeps what it was given."""

    name, backend, version = "reverser", "test", "1"
    base, base_k = "popularity", 3

    def __init__(self):
        self.seen: dict[int, UserContext] = {}

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        self.seen.update({c.user_id: c for c in contexts})
        return [Ranking(tuple(RankedItem(m, float(i)) for i, m in enumerate(reversed(c.candidate_ids))), {"parse": "ok"})
                for c in contexts]


class Broken(BaseRanker):
    name, backend, version = "broken", "test", "1"

    def rank_many(self, contexts):
        raise RuntimeError("base down")


@pytest.fixture()
def composed(tmp_path):
    settings = Settings().replace(host={"data_dir": write_folder(tmp_path / "data", tiny_ratings()),
                                        "work_dir": tmp_path / "work"})
    return settings, open_store(StoreSettings(kind="file", dir=tmp_path / "store"))


def _ctx(user_id, *rated, candidates=HOST_CANDIDATES):
    return UserContext(user_id, tuple(UserRating(m, 4.0, i) for i, m in enumerate(rated)), candidates, {})


def test_the_record_is_the_reranked_top_k_then_the_rest_of_the_base(composed):
    settings, store = composed
    reranker = Reverser()
    base = base_ranker(reranker, settings, store)
    assert base.name == "popularity"
    summary = RerankSummary(model=reranker.name)
    # User 1 rated 3: popularity ranks 6 (14 raters), 1, 2, 4, 8 (12 each, by id), then 5, 7 (2 each).
    # User 2 has no ratings: the base cannot rank them, so the reranker reranks the host's candidates.
    # User 3's candidates are only 7, 5, 8: the base's top 3 among them.
    rank_contexts(reranker, [_ctx(1, 3), _ctx(2), _ctx(3, 3, candidates=(7, 5, 8))], store, summary, base=base)
    assert summary.written == 3 and summary.failed == 0

    assert reranker.seen[1].candidate_ids == (6, 1, 2)
    assert reranker.seen[1].base_scores == {6: 14.0, 1: 12.0, 2: 12.0}
    record = store.get_record("reverser", 1)
    assert record.movie_ids == [2, 1, 6, 4, 8, 5, 7]
    assert record.meta == {"parse": "ok", "base": "popularity", "reranked": 3}
    assert record.items[3].reason == "rated by 12 people here"  # the base's own items keep their reasons

    assert reranker.seen[2].candidate_ids == HOST_CANDIDATES and reranker.seen[2].base_scores is None
    assert store.get_record("reverser", 2).movie_ids == list(reversed(HOST_CANDIDATES))
    assert "base" not in store.get_record("reverser", 2).meta

    assert reranker.seen[3].candidate_ids == (8, 5, 7)
    assert store.get_record("reverser", 3).movie_ids == [7, 5, 8, 6, 1, 2, 4]


def test_a_failing_base_leaves_the_host_candidates(composed):
    _, store = composed
    reranker = Reverser()
    summary = RerankSummary(model=reranker.name)
    rank_contexts(reranker, [_ctx(1, 3)], store, summary, base=Broken())
    assert summary.failed == 0 and reranker.seen[1].candidate_ids == HOST_CANDIDATES
    assert store.get_record("reverser", 1).movie_ids == list(reversed(HOST_CANDIDATES))
