"""The jobs that move users through candidates -> ranker -> store: `rerank` (in-process), `rerank_spark`, `nearline`."""
