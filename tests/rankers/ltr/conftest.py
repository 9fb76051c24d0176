"""LTR fixtures: PALR's tiny data folder (the first 30 fixture users) and tiny causal LM."""
from tests.rankers.palr.conftest import tiny_folder, tiny_model  # noqa: F401 (fixtures)
