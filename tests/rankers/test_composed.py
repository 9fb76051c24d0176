"""`Reranked(base, reranker, k)`, as `registry.make_ranker` composes it: the reranker sees the base's top K of
the user's candidates, and the record is its order of those, then the rest of the base's list. The base is the
real `popularity` model of a tiny data folder."""
from typing import Sequence

import pytest

from sparrow_llm.domain import MovieMeta, RankedItem, Ranking, UserContext, UserRating
from sparrow_llm.rankers.base import BaseRanker
from sparrow_llm.rankers.composed import Reranked
from sparrow_llm.registry import make_ranker

from tests.rankers.retrieval.conftest import MOVIES
from tests.rankers.retrieval.conftest import tiny_settings  # noqa: F401

CATALOGUE = {m: MovieMeta(m, t, 2000 + m, ("Drama",), 4.0, 10) for m, t in MOVIES.items()}


class Reverser(BaseRanker):
    """Reverses its candidates (so the composition's order is visible) and keeps what it was given."""

    name, backend, version = "reverser", "test", "1"

    def __init__(self, fail: bool = False):
        self.seen: dict[int, UserContext] = {}
        self.fail, self.closed = fail, 0

    def rank_many(self, contexts: Sequence[UserContext]) -> list[Ranking | None]:
        if self.fail:
            raise RuntimeError("reranker down")
        self.seen.update({c.user_id: c for c in contexts})
        return [Ranking(tuple(RankedItem(m, float(i)) for i, m in enumerate(reversed(c.candidate_ids))), {"parse": "ok"})
                if c.user_id != 4 else None for c in contexts]

    def close(self):
        self.closed += 1


def _ctx(user_id, *rated, candidates=tuple(CATALOGUE)):
    return UserContext(user_id, tuple(UserRating(m, 4.0, i) for i, m in enumerate(rated)), candidates, CATALOGUE)


@pytest.fixture()
def popularity(tiny_settings):
    base = make_ranker("popularity", tiny_settings)
    yield base
    base.close()


def test_the_record_is_the_reranked_top_k_then_the_rest_of_the_base(popularity):
    reranker = Reverser()
    composed = Reranked(popularity, reranker, 3)
    # User 1 rated 3: popularity ranks 6 (14 raters), 1, 2, 4, 8 (12 each, by id), then 5, 7 (2 each).
    # User 2 has no ratings: the base cannot rank them, so the stage keeps the host's order (None).
    # User 3's candidates are only 7, 5, 8: the base ranks only those.
    # User 4: the reranker has nothing to say, so the base's list is served.
    one, two, three, four = composed.rank_many([_ctx(1, 3), _ctx(2), _ctx(3, 3, candidates=(7, 5, 8)), _ctx(4, 3)])
    assert reranker.seen[1].candidate_ids == (6, 1, 2)
    assert reranker.seen[1].base_scores == {6: 14.0, 1: 12.0, 2: 12.0}
    assert [i.movie_id for i in one.items] == [2, 1, 6, 4, 8, 5, 7]
    assert one.meta["base"] == "popularity" and one.meta["reranked"] == 3 and one.meta["parse"] == "ok"
    assert one.items[3].reason == "rated by 12 people here"  # the base's own items keep their reasons
    assert two is None and 2 not in reranker.seen
    assert reranker.seen[3].candidate_ids == (8, 5, 7)
    assert [i.movie_id for i in three.items] == [7, 5, 8]
    base_list = popularity.rank(_ctx(4, 3))
    assert four.items == base_list.items and four.meta["reranked"] == 0
    assert composed.name == "reverser" and composed.version == "1+" + popularity.version


def test_a_failing_reranker_serves_the_bases_list_and_says_why(popularity):
    composed = Reranked(popularity, Reverser(fail=True), 3)
    ranking = composed.rank(_ctx(1, 3))
    assert ranking.items == popularity.rank(_ctx(1, 3)).items
    assert ranking.meta["error"] == "RuntimeError" and ranking.meta["error_message"] == "reranker down"


def test_close_releases_the_reranker_and_the_base(popularity):
    reranker = Reverser()
    Reranked(popularity, reranker, 3).close()
    assert reranker.closed == 1
    with pytest.raises(ValueError, match="top K"):
        Reranked(popularity, reranker, 0)


def test_the_registry_composes_a_reranker_over_the_configured_base(tiny_settings):
    ranker = make_ranker("llm", tiny_settings.replace(base="popularity", base_k=4, llm={"backend": "local-minilm"}))
    try:
        assert isinstance(ranker, Reranked) and ranker.base.name == "popularity" and ranker.k == 4
        assert ranker.candidate_source == "catalogue" and ranker.name == "llm"
    finally:
        ranker.close()
    alone = make_ranker("llm", tiny_settings.replace(base=None, llm={"backend": "local-minilm"}))
    assert not isinstance(alone, Reranked) and alone.candidate_source == "host"
    alone.close()
