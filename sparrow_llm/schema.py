"""Column names, file names and store keys: the one place they are spelled.

The Java side (`jvm_bridge/`) spells the store keys again; `docs/bridge-contract.md` is the
contract both follow.
"""
from __future__ import annotations

import re

__all__ = [
    "RATINGS_CSV", "MOVIES_CSV", "LINKS_CSV", "ITEM_EMB_CSV", "USER_EMB_CSV",
    "COL_USER", "COL_MOVIE", "COL_RATING", "COL_TIMESTAMP", "COL_TITLE", "COL_GENRES", "COL_RELEASE_YEAR", "NO_GENRES",
    "LIKED_RATING", "PARSE_OK", "PARSE_REPAIRED", "PARSE_FALLBACK", "LEGACY_STORE_SUBDIR", "FILE_RECORDS", "FILE_PROFILES", "FILE_CACHE",
    "REDIS_RECORD", "REDIS_MODELS", "REDIS_PROFILE", "REDIS_CACHE", "MODEL_NAME_RE", "HOST_CANDIDATES", "DEMO_MODEL", "DEMO_USERS",
    "SOURCE_HOST", "SOURCE_CATALOGUE",
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
COL_RELEASE_YEAR = "releaseYear"
# movies.csv's word for a movie without genres.
NO_GENRES = "(no genres listed)"

# How a ranker's answer was read (a record's meta "parse"): "fallback" keeps the host's order.
PARSE_OK, PARSE_REPAIRED, PARSE_FALLBACK = "ok", "repaired", "fallback"

# The host's label threshold (trainingSamples.csv: label = rating >= 3.5).
LIKED_RATING = 3.5

# The file store's old default, relative to the host's web root: the host serves it to anyone, so records found
# there are moved into the plugin's own store folder (`store.adopt_legacy_store`).
LEGACY_STORE_SUBDIR = "modeldata/sparrow-llm"
# The owner-only folder (mode 0700) under SPARROW_LLM_HOME that holds the connect file (the gateway token) and the
# host's log; the launcher (BridgeConfig.PRIVATE_DIR) names it the same. The home is never inside the web root.
PRIVATE_SUBDIR = "private"
CONNECT_FILE = "gateway.json"
HOST_LOG = "host.log"
# File store folders, relative to the store root (default `$SPARROW_LLM_HOME/store`).
FILE_RECORDS = "records"
FILE_PROFILES = "profiles"
FILE_CACHE = "cache"

# Redis store: beside the host's `i2vEmb:`, `uEmb:`, `uf:`, `mf:` keys, all under `sllm:`.
REDIS_RECORD = "sllm:rec:{model}:{user_id}"
REDIS_MODELS = "sllm:models"
REDIS_PROFILE = "sllm:profile:{user_id}"
REDIS_CACHE = "sllm:cache:{key}"

# A plugin model's name, as the store and the stage accept it.
MODEL_NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")

# The host's candidate count in RecForYouProcess.getRecList: asking for this many gives its whole order.
# The stage serves a record's movies, then the rest of this many in the host's order.
HOST_CANDIDATES = 800
DEMO_MODEL = "llm"  # what `sparrow-llm demo` (and `make demo`) runs: PALR on the local model
DEMO_USERS = 50  # users the demo profiles and ranks unless told (the others see the host's order)

# What a ranker ranks (`Ranker.candidate_source`): the host's candidates (its recall for the user), or every
# movie of the catalogue the host loads (the retrieval rankers, and so every reranker composed over one).
SOURCE_HOST = "host"
SOURCE_CATALOGUE = "catalogue"
