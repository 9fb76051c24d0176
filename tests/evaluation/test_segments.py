"""Segments: users by history length (boundaries 20/21 and 100/101), hidden movies by popularity (head: the 20%
most rated)."""
from sparrow_llm.evaluation.segments import HEAD, TAIL, Segment, assign_segments, history_band, segment_groups
from sparrow_llm.registry import ABLATIONS, ranker_names


def test_history_bands_at_their_boundaries():
    assert [history_band(n) for n in (0, 1, 20, 21, 100, 101, 5000)] == [
        "≤ 20", "≤ 20", "≤ 20", "21–100", "21–100", "> 100", "> 100"]


def test_segments_of_a_hand_built_case():
    # 10 movies: 1 and 2 have the most ratings, so they are the head (20% of 10); 3 has more than 4..10 but is
    # third. Movie 99 has no count at all (not in the catalogue): the tail.
    popularity = {1: 50, 2: 40, 3: 30, **{m: 10 - m for m in range(4, 11)}}
    history = {11: 20, 12: 21, 13: 100, 14: 101, 15: 3}
    targets = {11: 1, 12: 2, 13: 3, 14: 10, 15: 99}
    segments = assign_segments(history, targets, popularity)
    assert segments == {11: Segment(20, "≤ 20", HEAD), 12: Segment(21, "21–100", HEAD),
                        13: Segment(100, "21–100", TAIL), 14: Segment(101, "> 100", TAIL),
                        15: Segment(3, "≤ 20", TAIL)}
    assert segment_groups(segments) == {
        "history ≤ 20": [11, 15], "history 21–100": [12, 13], "history > 100": [14],
        "hidden movie in the head": [11, 12], "hidden movie in the tail": [13, 14, 15]}
    # Empty segments are named too, so the report can say nobody is in them.
    assert segment_groups({}) == {label: [] for label in segment_groups(segments)}


def test_every_ablation_pairs_two_registered_models():
    names = set(ranker_names())
    assert all(model in names and ablated in names and model != ablated for model, ablated in ABLATIONS.items())
