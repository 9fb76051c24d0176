"""The report's gain of a reranker over its base, next to the gain over host-emb, a ranker's gain over its
ablation, overall and per segment, and the training cost row."""
import math
import re

import pandas as pd
import pytest

from sparrow_llm.evaluation.report import Arm, Variant, score_variant, write_per_user, write_report
from sparrow_llm.evaluation.segments import HEAD, TAIL, Segment
from sparrow_llm.meter import Cost, measure


def test_a_reranker_is_paired_with_its_base_and_host_emb(tmp_path):
    targets = {1: 10, 2: 8, 3: 5}
    host = Arm("host-emb (filtered)", "host", {1: [3, 10], 2: [4, 8], 3: [5]})  # NDCG@10: 1/log2(3), 1/log2(3), 1
    base = Arm("ease-recent", "retrieval", {1: [10], 2: [4, 8], 3: [9, 5]},  # 1, 1/log2(3), 1/log2(3)
               prep_s=2.0, prep_memory=Cost(2.0, peak_bytes=3 * 2**30, start_bytes=2**30))
    reranker = Arm("llm", "local", {1: [10], 2: [8], 3: [9, 5]}, base="ease-recent")  # 1, 1, 1/log2(3)
    variant = Variant("host", "t", "n", targets, [host, base, reranker])
    score_variant(variant, popularity={3: 1, 4: 1, 5: 1, 8: 1, 9: 1, 10: 1}, catalogue_size=10, seed=0)
    third = 1 / math.log2(3)
    assert reranker.scores.base_delta.mean == pytest.approx((0 + (1 - third) + 0) / 3)
    assert reranker.scores.delta.mean == pytest.approx(((1 - third) + (1 - third) + (third - 1)) / 3)
    assert base.scores.base_delta is None and host.scores.delta is None

    write_report(tmp_path / "r.md", tmp_path / "r.png", "cmd", {}, [variant])
    text = (tmp_path / "r.md").read_text()
    row = next(line for line in text.splitlines() if re.match(r"\| llm\s+\| 0\.667", line))
    assert f"| {reranker.scores.base_delta} vs ease-recent " in row
    assert re.search(r"\| ease-recent\s+\| retrieval\s+\| 2\.0\s+\| 3\.00 \(\+2\.00\)\s+\|", text)


def test_the_meter_sees_an_allocation():
    import numpy as np

    with measure() as cost:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
    assert cost.seconds > 0 and cost.added_gib >= 0.05 and cost.peak_bytes >= cost.start_bytes


def test_a_ranker_is_paired_with_its_ablation_overall_and_in_each_segment(tmp_path):
    targets = {1: 10, 2: 8, 3: 5, 4: 7}
    without = Arm("ltr", "lightgbm", {1: [3, 10], 2: [8], 3: [9, 4, 5], 4: [1]})  # 1/log2(3), 1, 1/2, 0
    with_llm = Arm("llm-ltr", "lightgbm", {1: [10], 2: [4, 8], 3: [5], 4: [7]}, ablated="ltr")  # 1, 1/log2(3), 1, 1
    variant = Variant("host", "t", "n", targets, [without, with_llm],
                      segments={1: Segment(5, "≤ 20", HEAD), 2: Segment(20, "≤ 20", TAIL),
                                3: Segment(21, "21–100", TAIL), 4: Segment(200, "> 100", TAIL)})
    score_variant(variant, popularity={m: 1 for m in range(1, 11)}, catalogue_size=10, seed=0)
    third = 1 / math.log2(3)
    gains = {1: 1 - third, 2: third - 1, 3: 0.5, 4: 1.0}  # llm-ltr minus ltr, per user
    assert with_llm.scores.ablation_delta.mean == pytest.approx(sum(gains.values()) / 4)
    assert with_llm.scores.base_delta is None and without.scores.ablation_delta is None
    by_segment = {"history ≤ 20": (1, 2), "history 21–100": (3,), "history > 100": (4,),
                  "hidden movie in the head": (1,), "hidden movie in the tail": (2, 3, 4)}
    assert set(with_llm.segment_scores) == set(by_segment)
    for label, users in by_segment.items():
        delta = with_llm.segment_scores[label].ablation_delta
        assert delta.mean == pytest.approx(sum(gains[u] for u in users) / len(users)), label
        assert delta.low <= delta.mean <= delta.high
    assert with_llm.segment_scores["history > 100"].metrics["NDCG@10"].mean == 1.0

    write_report(tmp_path / "r.md", tmp_path / "r.png", "cmd", {}, [variant])
    text = (tmp_path / "r.md").read_text()
    assert "ΔNDCG@10 vs its ablation" in text.split("### Segments")[0]
    assert f"| {with_llm.scores.ablation_delta} vs ltr " in text
    tail = with_llm.segment_scores["hidden movie in the tail"]
    assert re.search(rf"\| hidden movie in the tail\s+\| 3\s+\| llm-ltr\s+\| {re.escape(str(tail.metrics['NDCG@10']))}"
                     rf"\s+\| –\s+\| {re.escape(str(tail.ablation_delta))} vs ltr", text)
    write_per_user(tmp_path / "per_user.csv", [variant])
    rows = pd.read_csv(tmp_path / "per_user.csv").query("ranker == 'llm-ltr'").set_index("userId")
    assert rows["history"].to_dict() == {1: 5, 2: 20, 3: 21, 4: 200}
    assert rows["hidden_popularity"].to_dict() == {1: "head", 2: "tail", 3: "tail", 4: "tail"}
    assert rows["rank"].to_dict() == {1: 1, 2: 2, 3: 1, 4: 1}


def test_no_ablation_column_without_an_ablation(tmp_path):
    arm = Arm("ease", "retrieval", {1: [10]})
    variant = Variant("host", "t", "n", {1: 10}, [arm])
    score_variant(variant, popularity={10: 1}, catalogue_size=10, seed=0)
    write_report(tmp_path / "r.md", tmp_path / "r.png", "cmd", {}, [variant])
    text = (tmp_path / "r.md").read_text()
    assert "vs its ablation" not in text and "### Segments" not in text and arm.segment_scores == {}
