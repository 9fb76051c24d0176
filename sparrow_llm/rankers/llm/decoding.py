"""How a local model's generation is held, row by row of a batch (requests of different steps share one):
where each answer ends (`AnswerEnd`, a transformers stopping criterion over the request's `stop`) and the format a
request's answer must keep (`AnswerFormat`, a transformers logits processor over the request's `answer`).
"""
from __future__ import annotations

import re
from typing import Sequence

from .base import IndexList

__all__ = ["answer_end", "AnswerEnd", "AnswerFormat"]


def answer_end(text: str, stop: str) -> int | None:
    """Where the answer in `text` ends: just after the first match of the regular expression `stop` (None: not
    yet, or no `stop`)."""
    match = re.search(stop, text) if stop else None
    return match.end() if match else None


class AnswerEnd:
    """A transformers stopping criterion: per row, whether the row's new tokens hold its answer's end (each row
    has its own `stop`, so requests of different steps share a batch)."""

    def __init__(self, tokenizer, stops: Sequence[str], prefills: Sequence[str], width: int):
        self._tokenizer, self._stops, self._width = tokenizer, list(stops), width
        self._prefills = prefills
        self._done = [False] * len(stops)  # a row without `stop` runs to the model's end or its cap

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        rows = input_ids[:, self._width:].tolist()
        for i, (stop, prefill, tokens) in enumerate(zip(self._stops, self._prefills, rows)):
            if stop and not self._done[i]:
                text = prefill + self._tokenizer.decode(tokens, skip_special_tokens=True)
                self._done[i] = answer_end(text, stop) is not None
        return torch.tensor(self._done, dtype=torch.bool, device=input_ids.device)


_FORMAT_CHARACTERS = frozenset("0123456789,]")
_FORMAT_PIECES: dict[int, tuple[list[int], list[str]]] = {}  # id(tokenizer) -> the tokens an IndexList can use


def _format_pieces(tokenizer) -> tuple[list[int], list[str]]:
    """The tokens made only of an index list's characters, and their texts (a few hundred of the vocabulary)."""
    if id(tokenizer) not in _FORMAT_PIECES:
        pieces = ((i, tokenizer.decode([i])) for i in range(len(tokenizer)))
        kept = [(i, text) for i, text in pieces if text and set(text) <= _FORMAT_CHARACTERS]
        _FORMAT_PIECES[id(tokenizer)] = ([i for i, _ in kept], [text for _, text in kept])
    return _FORMAT_PIECES[id(tokenizer)]


class AnswerFormat:
    """A transformers logits processor: each row whose request has an `answer` format may only take a next token
    that keeps its answer in that format (`IndexList.holds`); the other rows are free. A held row's answer always
    parses, and reaches its end (`]`, where `AnswerEnd` stops it) by the cap its format sizes."""

    def __init__(self, tokenizer, formats: Sequence[IndexList | None], prefills: Sequence[str], width: int):
        self._tokenizer, self._width = tokenizer, width
        self._rows = [(i, f, prefills[i]) for i, f in enumerate(formats) if f is not None]
        self._ids, self._texts = _format_pieces(tokenizer) if self._rows else ([], [])

    def __call__(self, input_ids, scores):
        import torch

        for i, answer, prefill in self._rows:
            text = prefill + self._tokenizer.decode(input_ids[i, self._width:].tolist(), skip_special_tokens=True)
            if text.endswith("]") and answer.holds(text):
                continue  # whole: the row has stopped, its next tokens are padding
            allowed = [token for token, piece in zip(self._ids, self._texts) if answer.holds(text + piece)]
            if allowed:
                keep = torch.full_like(scores[i], float("-inf"))
                keep[allowed] = scores[i, allowed]
                scores[i] = keep
        return scores
