"""Rankers: one user's context in, a ranked list out.

`base` holds the protocol every ranker follows, `pretrained` the one way a trained model's folder is written
and read; each concrete ranker lives in its own module or package (`recent`, `retrieval`, `palr`,
`clickprompt`), and `sparrow_llm.registry` names them.
"""
