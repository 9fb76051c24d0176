"""`ltr` and `llm-ltr`: a LambdaRank model (LightGBM) over the base's top K, fed by every signal the plugin has.

`features` computes the (user, candidate) features as of a moment, `knowledge` prestores the local LLM's
item-knowledge vectors (a resumable Spark job, KAR-style), `samples` builds the training and validation groups
by time, `train` fits and publishes the model, `ranker` serves it. `llm-ltr` is the same stage with the LLM's
features.
"""
