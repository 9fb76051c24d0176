"""LLM backends: `base` (the interface, errors and the registry), `zhipu` (the GLM API, with `resilience`),
`local_minilm` (an offline stand-in)."""
