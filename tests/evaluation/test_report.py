"""The report's gain of a reranker over its base, next to the gain over host-emb, and the training cost row."""
import math
import re

import pytest

from sparrow_llm.evaluation.report import Arm, Variant, score_variant, write_report
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
