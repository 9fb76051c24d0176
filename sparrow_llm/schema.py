"""Column names, file names and store keys: the one place they are spelled.

The Java side (`jvm_bridge/`) spells the store keys again; `docs/bridge-contract.md` is the
contract both follow.
"""
from __future__ import annotations

__all__ = [
    "RATINGS_CSV", "MOVIES_CSV", "LINKS_CSV", "ITEM_EMB_CSV", "USER_EMB_CSV",
    "COL_USER", "COL_MOVIE", "COL_RATING", "COL_TIMESTAMP", "COL_TITLE", "COL_GENRES",
    "LIKED_RATING", "STORE_SUBDIR", "FILE_RECORDS", "FILE_PROFILES", "FILE_CACHE",
    "REDIS_RECORD", "REDIS_MODELS", "REDIS_PROFILE", "REDIS_CACHE",
]

# Host data layout, relative to the web root.
RATINGS_CSV = "sampledata/ratings.csv"
MOVIES_CSV = "sampledata/movies.csv"
LINKS_CSV = "sampledata/links.csv"
ITEM_EMB_CSV = "modeldata/item2vecEmb.csv"
USER_EMB_CSV = "modeldata/userEmb.csv"

COL_USER = "userId"
COL_MOVIE = "movieId"
COL_RATING = "rating"
COL_TIMESTAMP = "timestamp"
COL_TITLE = "title"
COL_GENRES = "genres"

# The host's label threshold (trainingSamples.csv: label = rating >= 3.5).
LIKED_RATING = 3.5

# File store, relative to the store root (default `<web root>/modeldata/sparrow-llm`).
STORE_SUBDIR = "modeldata/sparrow-llm"
FILE_RECORDS = "records"
FILE_PROFILES = "profiles"
FILE_CACHE = "cache"

# Redis store: beside the host's `i2vEmb:`, `uEmb:`, `uf:`, `mf:` keys, all under `sllm:`.
REDIS_RECORD = "sllm:rec:{model}:{user_id}"
REDIS_MODELS = "sllm:models"
REDIS_PROFILE = "sllm:profile:{user_id}"
REDIS_CACHE = "sllm:cache:{key}"
