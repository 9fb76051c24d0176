"""PALR (arXiv 2305.07622): `prompts` and `parsing` (what the LLM reads and answers), `ranker` (step 2),
`profiles` (step 1, a Spark job)."""
