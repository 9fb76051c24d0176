"""ClickPrompt (Lin et al., WWW 2024, arXiv 2310.09234) for the SparrowRecsys host, in PyTorch.

ClickPrompt joins a CTR model, which reads a sample's ids and statistics, and a pretrained language
model (PLM, here all-MiniLM-L6-v2: 6 BERT layers, 384 wide, 12 heads), which reads the same sample
as text. The CTR model's last hidden vector goes through a prompt generator that makes `num_prompt`
prefix keys/values for every PLM layer ("soft prompts", as in prefix tuning), so the PLM's reading of
the text is conditioned on what the CTR model saw.

Modules, one per concern:
  schema         the host's sample columns and vocabulary names.
  samples        ratings + movies -> CTR samples in the host's trainingSamples.csv columns, every feature
                 from strictly earlier ratings (no leakage); a time split; a reader of the host's files.
  samples_spark  the same samples as a PySpark job (`sparrow-llm features`), value for value.
  features       vocabularies and quantile buckets fitted on train (index 0 = unknown/missing, so unknown
                 users and movies encode), the sample as text, tokenized batches.
  configuration  `ClickPromptConfig` and the fusion modes `FUSIONS`, torch-free (the CLI reads its defaults).
  model          CTR backbones (DCNv2, DeepFM) in `BACKBONES`; `PromptGenerator`; the PLM with prefixes
                 through a `transformers.DynamicCache` (see model.py's docstring); `MLMHead`; `ClickPrompt`
                 with forward/loss/predict/mlm_loss and save_pretrained/from_pretrained (safetensors).
  train          `prepare_data` / `prepare_split`, `pretrain` (PA-MLM), `finetune` (early stopping on
                 validation AUC, or a validation of the caller's), `evaluate`, `evaluate_table`, `train_table`.
  ranking        the ranking task: every rating a click, sampled unrated movies as non-clicks, validation on
                 each user's held-out last liked movie ranked among the catalogue (NDCG@10).
  pairs          `PairScorer`: DCNv2 over (user, candidate) pairs, its first layers once per user / movie.
  score          `ClickPromptScorer`: candidates scored from the user's whole history, one user (`score`, the
                 samples as training builds them) or a whole batch (`score_many`, the same values, vectorised).
  checkpoint     the serving checkpoint of a data folder (`prepare_clickprompt`), keyed by its content: the
                 ranking task, PA-MLM then a CTR-only fine-tune.
  ranker         `ClickPromptRanker`, the `clickprompt` model: reranks the base ranker's top K (or the host's
                 candidates), fused with the base's scores (or the host's order).
  experiments    the paths of `sparrow-llm clickprompt pretrain|finetune|eval`.

Fusion modes (`ClickPromptConfig.fusion`, the registry `FUSIONS`):
  ctr         the CTR model's logit alone; no PLM is built.
  plm         the PLM's pooled text -> linear; no CTR model (the PLM-only baseline).
  prefix      the PLM reads the text with the CTR model's prompts as prefix; pooled -> linear.
  prefix_add  the prefix logit plus the CTR model's own logit.

Training follows the paper: `pretrain` runs prompt-aware masked language modelling (PA-MLM): 15% of
the text's tokens are masked and predicted by the PLM from the rest of the text *and the prompts*, so
the CTR model learns to carry what the text says. Then `finetune` either keeps the PLM
(`prefix`/`prefix_add`) or keeps only the pretrained CTR model (`ctr` with `init_from`), which serves
at plain CTR cost. The PLM is frozen by default (`freeze_plm`): gradients still flow through it
to the prompts, and its weights are not copied into checkpoints.
"""
