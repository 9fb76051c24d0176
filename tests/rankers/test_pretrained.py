"""Model folders: one save/load naming for every model, configs that load torch-free and refuse bad files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sparrow_llm.config import REPO_ROOT, ConfigError
from sparrow_llm.rankers.pretrained import CONFIG_FILE, WEIGHTS_FILE
from sparrow_llm.rankers.retrieval.configuration import EASE, LinearConfig, SASRecConfig
from sparrow_llm.rankers.retrieval.linear import LinearModel

# Every model's configuration module, and the CLI's parser (it shows ClickPrompt's defaults and choices).
TORCH_FREE = ("sparrow_llm.rankers.clickprompt.configuration", "sparrow_llm.rankers.retrieval.configuration",
              "sparrow_llm.rankers.retrieval.linear", "sparrow_llm.cli.parser")


def _modules_after_import(module: str) -> set[str]:
    # A child process: this one has loaded torch long ago.
    done = subprocess.run([sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("module", TORCH_FREE)
def test_configurations_load_without_torch(module):
    loaded = _modules_after_import(module)
    assert module in loaded and "torch" not in loaded


def test_the_torch_check_sees_torch():
    # The check above must be able to fail: a module that imports torch shows it.
    assert "torch" in _modules_after_import("sparrow_llm.rankers.retrieval.sasrec")


def test_the_cli_shows_clickprompt_defaults_from_its_configuration():
    done = subprocess.run([sys.executable, "-m", "sparrow_llm.cli", "clickprompt", "finetune", "--help"],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=True,
                          env={**os.environ, "COLUMNS": "200"})  # no help line wrapped
    assert "(default prefix)" in done.stdout and "ctr,plm,prefix,prefix_add" in done.stdout
    assert "(default 40)" in done.stdout and "(default 2)" in done.stdout


def test_every_model_saves_and_loads_one_way(tmp_path):
    # The torch-free model here; SASRec's and ClickPrompt's round trips are in their own tests.
    model = LinearModel(LinearConfig(EASE, l2=2.0), np.eye(2, dtype=np.float32), np.array([5, 7]))
    folder = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    loaded = LinearModel.from_pretrained(folder)
    assert loaded.config == model.config and loaded.movie_ids.tolist() == [5, 7]
    assert LinearConfig.from_pretrained(folder) == model.config


@pytest.mark.parametrize("text, message", [
    ("{not json", "Expecting property name"),
    ('["a list"]', "a SASRecConfig is a JSON object"),
    ('{"n_items": 3, "colour": "red"}', r"unknown SASRecConfig fields \['colour'\]"),
    ('{"max_len": 3}', "missing 1 required positional argument: 'n_items'"),
    ('{"n_items": 3, "heads": 0}', "SASRecConfig.heads must be a number >= 1"),
])
def test_a_bad_config_file_is_one_error_naming_it(tmp_path, text, message):
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        SASRecConfig.from_pretrained(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / CONFIG_FILE)) and "\n" not in str(caught.value)


def test_overrides_are_checked_too(tmp_path):
    SASRecConfig(n_items=3).save_pretrained(tmp_path)
    assert SASRecConfig.from_pretrained(tmp_path, max_len=7).max_len == 7
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["max_len"] == 50
    with pytest.raises(ConfigError, match="SASRecConfig.max_len must be a number >= 1"):
        SASRecConfig.from_pretrained(tmp_path, max_len=0)
