"""Blocks of the network: shapes and dtypes, the prefix path into BERT, gradients, PA-MLM."""
from __future__ import annotations

import json

import pytest
import torch

from sparrow_llm.config import ConfigError
from sparrow_llm.rankers.clickprompt.configuration import BACKBONE_NAMES, FUSIONS, POOLING_NAMES, ClickPromptConfig
from sparrow_llm.rankers.clickprompt.model import (
    BACKBONES, POOLINGS, ClickPrompt, FieldEmbedding, MLMHead, PromptGenerator,
)

B = 4


@pytest.fixture(scope="module")
def batch(tiny_data):
    return tiny_data.train.batch(range(B))


@pytest.fixture(scope="module")
def models(tiny_config, tiny_data):
    """One tiny model per fusion mode (dropout off, so outputs are functions of the inputs)."""
    return {f: ClickPrompt(tiny_config.replace(fusion=f, dropout=0.0), tiny_data.space).eval() for f in FUSIONS}


def test_config_json_round_trip_and_validation(tiny_config, tmp_path):
    tiny_config.save_pretrained(tmp_path)
    assert ClickPromptConfig.from_pretrained(tmp_path) == tiny_config
    assert json.loads((tmp_path / "config.json").read_text())["mlp_dims"] == [16]
    assert ClickPromptConfig.from_pretrained(tmp_path, fusion="ctr") == tiny_config.replace(fusion="ctr")
    for bad, message in (({"backbone": "xgboost"}, "backbone must be one of"), ({"fusion": "late"}, "fusion must be"),
                         ({"pooling": "max"}, "pooling must be"), ({"num_prompt": 0}, "num_prompt must be >= 1")):
        with pytest.raises(ConfigError, match=message):
            tiny_config.replace(**bad)
    with pytest.raises(ConfigError, match="unknown ClickPromptConfig fields"):
        ClickPromptConfig.from_dict({**tiny_config.to_dict(), "colour": "red"})


def test_the_configuration_names_every_module_the_model_builds():
    # The torch-free configuration validates names the model maps to modules: the two lists must agree.
    assert set(BACKBONE_NAMES) == set(BACKBONES) and set(POOLING_NAMES) == set(POOLINGS)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_backbone_shapes(backbone, tiny_config, tiny_data, batch):
    config = tiny_config.replace(backbone=backbone)
    space = tiny_data.space
    embedding = FieldEmbedding(space.tables(), space.field_tables(), config.embed_dim)
    fields = len(space.field_tables())
    rows = embedding.rows(batch["cat"])
    emb = embedding(rows)
    assert emb.shape == (B, fields, config.embed_dim) and emb.dtype == torch.float32
    assert rows.max() < embedding.num_rows
    net = BACKBONES[backbone](fields, embedding.num_rows, config)
    logit, hidden = net(rows, emb)
    assert logit.shape == (B,) and logit.dtype == torch.float32
    assert hidden.shape == (B, net.hidden_dim) and hidden.dtype == torch.float32


def test_shared_vocabularies_share_rows(tiny_data, batch):
    space = tiny_data.space
    embedding = FieldEmbedding(space.tables(), space.field_tables(), 4)
    names = space.field_names()
    same = torch.zeros_like(batch["cat"])
    rows = embedding.rows(same)
    assert rows[0, names.index("movieId")] == rows[0, names.index("userRatedMovie3")]
    assert rows[0, names.index("movieId")] != rows[0, names.index("userId")]


def test_prompt_generator_and_mlm_head_shapes():
    gen = PromptGenerator(in_dim=10, num_layers=6, num_heads=12, head_dim=32, num_prompt=3, hidden=8, dropout=0.0)
    prompts = gen(torch.randn(B, 10))
    assert len(prompts) == 6
    for key, value in prompts:
        assert key.shape == value.shape == (B, 12, 3, 32) and key.dtype == torch.float32
    assert not torch.equal(prompts[0][0], prompts[0][1])
    head = MLMHead(hidden_size=384, vocab_size=50, eps=1e-12)
    assert head(torch.randn(7, 384), torch.randn(50, 384)).shape == (7, 50)


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_model_outputs(fusion, models, batch):
    model = models[fusion]
    logits = model(batch)
    assert logits.shape == (B,) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    probs = model.predict(batch)
    assert ((probs > 0) & (probs < 1)).all()
    torch.testing.assert_close(probs, torch.sigmoid(logits))
    assert model.loss(batch).shape == ()
    built = {name for name, _ in model.named_children()}
    assert ("plm" in built) == FUSIONS[fusion].uses_plm and ("ctr" in built) == FUSIONS[fusion].uses_ctr
    assert ("prompt" in built) == ("mlm_head" in built) == FUSIONS[fusion].uses_prompts


def test_prefix_changes_the_plm_output(models, batch):
    model = models["prefix"]
    with torch.no_grad():
        plain = model.encode_text(batch)
        _, hidden = model.ctr_forward(batch["cat"])
        prompts = model.prompt(hidden)
        prefixed = model.encode_text(batch, prompts)
        # The same prefix with zeroed values: attention still shifts, so the output differs from plain too.
        other = model.encode_text(batch, [(k, torch.zeros_like(v)) for k, v in prompts])
    assert plain.shape == prefixed.shape == (B, batch["input_ids"].shape[1], 384)
    assert (plain - prefixed).abs().max() > 1e-2
    assert (prefixed - other).abs().max() > 1e-3
    # Without prompts our call equals the stock BERT forward: position ids and masks are the PLM's own.
    stock = model.plm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"]).last_hidden_state
    torch.testing.assert_close(plain, stock)


def test_masked_out_prefix_leaves_the_text_as_it_was(models, batch):
    """A prefix the attention mask hides must change nothing: proves the mask covers prefix + text
    and the text keeps positions 0..L-1."""
    from transformers import DynamicCache

    from sparrow_llm.rankers.clickprompt.model import _cache_kwarg

    model = models["prefix"]
    plm = model.plm
    with torch.no_grad():
        _, hidden = model.ctr_forward(batch["cat"])
        cache = DynamicCache()
        for layer, (k, v) in enumerate(model.prompt(hidden)):
            cache.update(k, v, layer)
        mask = torch.cat([torch.zeros(B, 2, dtype=torch.long), batch["attention_mask"]], dim=1)
        positions = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)
        hidden_prefix = plm(input_ids=batch["input_ids"], attention_mask=mask, token_type_ids=batch["token_type_ids"],
                            position_ids=positions, **{_cache_kwarg(type(plm)): cache}).last_hidden_state
    torch.testing.assert_close(hidden_prefix, model.encode_text(batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["prefix", "prefix_add"])
def test_gradients_reach_the_prompt_generator_and_ctr_embeddings(fusion, tiny_config, tiny_data, batch):
    model = ClickPrompt(tiny_config.replace(fusion=fusion), tiny_data.space).train()
    model.loss(batch).backward()
    for module in (model.prompt, model.embedding):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert model.embedding.table.weight.grad[model.embedding.rows(batch["cat"]).flatten()].abs().sum() > 0
    assert all(p.grad is None for p in model.plm.parameters())  # frozen


def test_unfrozen_plm_gets_gradients(tiny_config, tiny_data, batch):
    model = ClickPrompt(tiny_config.replace(fusion="prefix", freeze_plm=False), tiny_data.space).train()
    assert model.plm.training
    model.loss(batch).backward()
    assert model.plm.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_pa_mlm_loss_falls(tiny_config, tiny_data):
    torch.manual_seed(0)
    model = ClickPrompt(tiny_config.replace(fusion="prefix", dropout=0.0), tiny_data.space).train()
    batch = tiny_data.train.batch(range(8))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(30):
        # The same masks each step: the head and the prompts must learn to fill these blanks.
        loss = model.mlm_loss(batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert model.prompt.net[1].weight.grad.abs().sum() > 0  # the prompts took part


def test_masking_follows_bert(models, tiny_data):
    model = models["prefix"]
    batch = tiny_data.train.batch(range(64))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    masked, labels = model._mask_tokens(ids, mask, torch.Generator().manual_seed(1))
    chosen = labels != -100
    special = torch.isin(ids, torch.tensor(model.tokenizer.all_special_ids))
    assert not (chosen & (special | (mask == 0))).any()
    assert 0.12 < chosen.sum() / (~special & (mask == 1)).sum() < 0.18
    as_mask = (masked == model.tokenizer.mask_token_id) & chosen
    assert 0.7 < as_mask.sum() / chosen.sum() < 0.9
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_mlm_needs_prompts(models, batch):
    with pytest.raises(ValueError):
        models["ctr"].mlm_loss(batch)
