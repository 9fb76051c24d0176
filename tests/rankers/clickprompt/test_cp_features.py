"""Feature space (vocabularies, buckets, OOV, JSON), the text template, tokenized batches, metrics."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sparrow_llm.rankers.clickprompt.features import OOV, FeatureSpace, encode_samples, sample_texts
from sparrow_llm.catalog import movie_catalog
from sparrow_llm.rankers.clickprompt.samples import build_samples, movie_stats_now, time_split
from sparrow_llm.rankers.clickprompt.schema import CATEGORICAL_FIELDS, COL_MOVIE, COL_USER, NUMERIC_FIELDS


@pytest.fixture(scope="module")
def split(tiny_ratings, movies):
    return time_split(build_samples(tiny_ratings, movies))


@pytest.fixture(scope="module")
def space(split, tiny_ratings):
    return FeatureSpace.fit(split.train, movie_stats_now(tiny_ratings))


def test_vocabularies_come_from_train_only_and_unknowns_are_oov(space, split):
    assert set(space.vocabs["user"]) == set(split.train[COL_USER])
    assert set(space.vocabs["movie"]) >= set(split.train[COL_MOVIE])
    newcomers = split.test[~split.test[COL_USER].isin(split.train[COL_USER])]
    assert len(newcomers) > 0
    cat = space.encode(newcomers)
    assert (cat[:, 0] == OOV).all()  # userId is the first field

    odd = split.test.head(3).copy()
    odd[COL_MOVIE] = 10 ** 9
    odd["movieGenre1"] = "Space Opera"
    odd["userRatedMovie1"] = pd.array([None, None, None], dtype="Int64")
    odd["movieAvgRating"] = np.nan
    cat = space.encode(odd)
    fields = space.field_names()
    for name in (COL_MOVIE, "movieGenre1", "userRatedMovie1", "movieAvgRating"):
        assert (cat[:, fields.index(name)] == OOV).all(), name


def test_encoding_fits_the_tables(space, split):
    cat = space.encode(split.test)
    assert cat.dtype == np.int64 and cat.shape == (len(split.test), len(CATEGORICAL_FIELDS) + len(NUMERIC_FIELDS))
    sizes = space.tables()
    limits = np.array([sizes[t] for t in space.field_tables()])
    assert (cat >= 0).all() and (cat < limits).all()
    # Finite numeric values never land in the OOV bucket.
    rating_count = space.field_names().index("movieRatingCount")
    assert (cat[:, rating_count] > OOV).all()


def test_json_round_trip(space, split):
    again = FeatureSpace.from_json(json.loads(json.dumps(space.to_json())))
    assert again == space
    np.testing.assert_array_equal(again.encode(split.test), space.encode(split.test))
    pd.testing.assert_frame_equal(again.movie_stats, space.movie_stats)


def test_text_template(movies):
    ratings = pd.DataFrame({COL_USER: [1, 1, 1], COL_MOVIE: [1, 2, 3], "rating": [5.0, 4.0, 2.0],
                            "timestamp": [10, 20, 30]})
    samples = build_samples(ratings, movies)
    history, candidate = sample_texts(samples, movie_catalog(movies))[2]
    assert history == ("Favourite genres: Adventure, Children, Fantasy, Animation, Comedy. "
                       "User liked: Jumanji (1995), Toy Story (1995).")
    assert candidate == "Candidate: Grumpier Old Men (1995), genres Comedy|Romance, no ratings yet."
    first_history, _ = sample_texts(samples, movie_catalog(movies))[0]
    assert first_history == "Favourite genres: none yet. User liked: nothing yet."


def test_truncation_shortens_the_history_not_the_candidate(space, split, movies, tiny_config):
    from sparrow_llm.rankers.clickprompt.model import load_tokenizer, plm_path

    tokenizer = load_tokenizer(plm_path(tiny_config))
    catalog = movie_catalog(movies)
    rows = split.test[split.test["userRatedMovie5"].notna()].head(20)
    encoded = encode_samples(rows, space, catalog, tokenizer, max_text_len=48)
    assert encoded.input_ids.shape[1] == 48  # long histories fill the budget
    plain = tokenizer(sample_texts(rows, catalog)[0][0] + " [SEP] " + sample_texts(rows, catalog)[0][1])
    assert len(plain["input_ids"]) > 48
    for ids, types, (history, candidate) in zip(encoded.input_ids, encoded.token_type_ids, sample_texts(rows, catalog)):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        assert text.endswith(tokenizer.decode(tokenizer(candidate, add_special_tokens=False)["input_ids"]))
        assert text.startswith("favourite genres")
        assert ids[0] == tokenizer.cls_token_id and types[0] == 0 and types[-1] == 1
    batch = encoded.batch([0, 1, 2])
    assert batch["cat"].shape == (3, encoded.cat.shape[1]) and str(batch["label"].dtype) == "torch.float32"
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape


def test_batches_cut_padding_to_the_longest_text(space, split, movies, tiny_config):
    from sparrow_llm.rankers.clickprompt.model import load_tokenizer, plm_path

    encoded = encode_samples(split.train.head(64), space, movie_catalog(movies), load_tokenizer(plm_path(tiny_config)))
    lengths = encoded.attention_mask.sum(axis=1)
    short = np.argsort(lengths)[:4]
    batch = encoded.batch(short)
    assert batch["input_ids"].shape[1] == lengths[short].max() < encoded.input_ids.shape[1]
    assert sum(len(b["cat"]) for b in encoded.batches(10, shuffle=True, seed=3)) == 64
