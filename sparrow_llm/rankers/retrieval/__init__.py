"""Retrieval rankers trained on the deploy's own interactions (implicit: a rated movie is an interaction).

`popularity` and `ease` are the sanity floor every recommender evaluation carries; `ease-recent` is EASE over
the liked movies with the user's history weighted by recency; `sasrec` is a self-attentive sequential model
in PyTorch. Each ranks the whole catalogue (the data folder's movies.csv) for a user, leaves out what the
user rated, and keeps its top N; hyperparameters are chosen on a validation split of the data folder itself
(`samples`), and the trained models are kept per data content (`checkpoint`).
"""
