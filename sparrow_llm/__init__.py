"""sparrow-llm: LLM rerank stages (PALR, ClickPrompt) for a SparrowRecsys deploy."""
__version__ = "0.1.0"
