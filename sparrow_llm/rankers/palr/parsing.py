"""PALR's answers: the JSON the rank and reasons prompts ask for, read strictly, else repaired.

`parse_ranking` reads `[3,17]` (and the pairs `[[3,"tense heist"]]` and objects `[{"i": 3, "r": "..."}]` of
earlier templates), and repairs the usual ways a model breaks it. `parse_reasons` reads `["tense heist", ...]`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import json_repair

from ...schema import PARSE_FALLBACK, PARSE_OK, PARSE_REPAIRED

__all__ = ["ParsedRanking", "parse_ranking", "parse_reasons", "PARSE_OK", "PARSE_REPAIRED", "PARSE_FALLBACK"]

_MAX_REASON_CHARS = 80  # a reason longer than this is cut


@dataclass(frozen=True)
class ParsedRanking:
    indexes: tuple[int, ...]  # candidate indexes in the model's order, valid and unique
    reasons: tuple[str, ...]  # one per index, "" when the model gave none
    status: str  # PARSE_OK, PARSE_REPAIRED or PARSE_FALLBACK


_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
# `#3` where a JSON index belongs (the candidate's label echoed): read as 3.
_ECHOED_LABEL = re.compile(r"(?<=[\[,])(\s*)#(?=\d)")
# A quoted string in a line: the reason of a pick, not a title to look up.
_QUOTED = re.compile(r""""[^"]*"|'[^']*'""")
# A candidate's label echoed in prose: `#3` as the rank prompt shows it, or `[3]`.
_LABEL_INDEX = re.compile(r"(?<![\w#])#(\d+)\b|\[(\d+)\]")
_LEADING_NUMBER = re.compile(r"^\s*(?:#\s*)?(\d+)\s*[.):]\s*")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+\s*[.)]\s*(?=[\[#]))\s*")
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")
_SEPARATORS = " \t-\u2013\u2014:|,;*\"'"

_Pick = tuple[int, str]
# json recurses per nesting level: an answer of a few thousand "[" must not escape as RecursionError.
_DECODE_ERRORS = (ValueError, RecursionError)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


class _Titles:
    """Finds candidates by title, with or without the year; a title two candidates share is skipped."""

    def __init__(self, labels: Sequence[str]):
        self._labels = labels
        self._names: list[tuple[str, int]] | None = None  # built on the first find: an answer as asked needs none

    def _index(self) -> list[tuple[str, int]]:
        if self._names is None:
            names: dict[str, set[int]] = {}
            for i, label in enumerate(self._labels):
                for name in {_norm(label), _norm(_YEAR_SUFFIX.sub("", label))}:
                    if name:
                        names.setdefault(name, set()).add(i)
            self._names = [(name, next(iter(ids))) for name, ids in names.items() if len(ids) == 1]
        return self._names

    def find(self, text: str) -> tuple[int, str] | None:
        """(index, the text after it) of the title that starts earliest in `text`, the longest on a tie.

        Earliest, because a reason may name another movie ("Heat (1995): as tense as Ronin").
        """
        norm = f" {_norm(text)} "
        hits = [(at, -len(name), name, index) for name, index in self._index()
                if (at := norm.find(f" {name} ")) >= 0]
        if not hits:
            return None
        _, _, name, index = min(hits)
        return index, _after_title(text, name)


def _after_title(text: str, name: str) -> str:
    # The reason is whatever follows the title's last word (and a year) on the line.
    last = re.escape(name.split()[-1])
    match = re.search(rf"\b{last}\b\W*(?:\(\d{{4}}\))?", text, re.IGNORECASE)
    return text[match.end():] if match else ""


def _reason(value: Any) -> str:
    text = " ".join(str(value or "").split()).strip(_SEPARATORS)
    return text[:_MAX_REASON_CHARS]


def _index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(?:#|\[)?(\d+)\]?\s*", value)
        return int(match.group(1)) if match else None
    return None


def _picks_from_json(value: Any, titles: _Titles) -> list[_Pick] | None:
    """Picks from a decoded answer: a list of pairs, objects, numbers or titles (or such a list in an object)."""
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(value, list):
        return None
    picks = []
    # Strings are titles only in a list of titles: in `[42, "like Heat"]` the string is a reason.
    titles_only = all(isinstance(e, str) for e in value)
    for element in value:
        reason: Any = ""
        titled = False
        if isinstance(element, list):  # the pair `[3, "reason"]` (v2); `["Heat", "reason"]` names its title
            element, reason = (element + [None, ""])[:2]
            titled = True
        elif isinstance(element, dict):  # the object `{"i": 3, "r": "reason"}` (v1), or `{"title": ...}`
            reason = element.get("r") or element.get("reason") or ""
            key = next((k for k in ("i", "index", "idx", "id") if k in element), None)
            element = element[key] if key else element.get("title")
            titled = key is None
        elif not titled:
            titled = titles_only
        index = _index(element)
        if index is None and isinstance(element, str) and titled:
            found = titles.find(element)
            index = found[0] if found else None
        # An element naming no candidate stays in as -1: dropped later, it makes the answer "repaired".
        picks.append((-1 if index is None else index, _reason(reason)))
    return picks


def _strict(text: str, titles: _Titles) -> list[_Pick] | None:
    """Exactly what the prompt asks for: a JSON list and nothing else."""
    try:
        value = json.loads(text)
    except _DECODE_ERRORS:
        return None
    return _picks_from_json(value, titles) if isinstance(value, list) else None


def _repaired_json(text: str, titles: _Titles) -> list[_Pick] | None:
    """JSON the model broke (prose or a code fence around it, single quotes, unquoted keys, trailing commas, a
    tail cut off by max_tokens), mended by json_repair: a code fence first, else the whole answer."""
    for source in (*_FENCE.findall(text), text):
        try:
            value = json_repair.loads(_ECHOED_LABEL.sub(r"\1", source))
        except _DECODE_ERRORS:
            continue
        picks = _picks_from_json(value, titles)
        if picks:
            if not source.rstrip().endswith(("]", "}")):  # cut off by max_tokens: the last reason is a stub
                picks[-1] = (picks[-1][0], "")
            return picks
    return None


def _lines(text: str, titles: _Titles) -> list[_Pick] | None:
    """One pick per line: a title, else a `#3` or `[3]` label, else a leading `3.` (the answer of a naive prompt).

    Quoted text is a reason, never a pick: `[99, "as creepy as Ghost"]` names no candidate.
    """
    picks = []
    for line in text.splitlines():
        line = _QUOTED.sub("", line.replace("**", ""))
        found = titles.find(line)
        if found:
            picks.append((found[0], _reason(found[1])))
            continue
        line = _BULLET.sub("", line)
        match = _LABEL_INDEX.search(line) or _LEADING_NUMBER.match(line)
        if match:
            picks.append((int(next(g for g in match.groups() if g)), _reason(line[match.end():])))
    return picks or None


# Repairs of an answer that is not exactly what was asked; the one that finds the most picks wins
# (prose can hold a stray "[2]" that decodes as JSON), the earlier on a tie.
_REPAIRS = (_repaired_json, _lines)


def parse_ranking(text: str | None, candidates: Sequence[str]) -> ParsedRanking:
    """The candidates an answer picks, in its order; `candidates` are the labels the prompt showed.

    `ok`: a JSON list (of pairs, objects or indexes), each element naming a different candidate.
    `repaired`: picks found another way, or some dropped (hallucinated indexes, repeats).
    `fallback`: nothing usable; the caller fills the list from the host's order, as it does after
    the picks.
    """
    text = (text or "").strip()
    if not text:
        return ParsedRanking((), (), PARSE_FALLBACK)
    titles = _Titles(candidates)
    picks = _strict(text, titles)
    if picks:
        indexes, reasons = _valid(picks, len(candidates))
        if indexes:
            return ParsedRanking(indexes, reasons, PARSE_OK if len(indexes) == len(picks) else PARSE_REPAIRED)
    best: tuple[tuple[int, ...], tuple[str, ...]] = ((), ())
    for repair in _REPAIRS:
        found = _valid(repair(text, titles) or (), len(candidates))
        if len(found[0]) > len(best[0]):
            best = found
    return ParsedRanking(*best, PARSE_REPAIRED if best[0] else PARSE_FALLBACK)


def _valid(picks: Iterable[_Pick], n: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    seen: dict[int, str] = {}
    for index, reason in picks:
        if 0 <= index < n and index not in seen:
            seen[index] = reason
    return tuple(seen), tuple(seen.values())


def parse_reasons(text: str | None, n: int) -> list[str]:
    """The `n` reasons of an answer to the reasons prompt, in order; "" for one it lacks or that is no text.

    `["tense heist", ...]` as asked; repaired by json_repair (a tail cut off by the cap, prose around it), and
    pairs `[3, "tense heist"]` or objects `{"r": ...}` read for their text.
    """
    try:
        value = json_repair.loads((text or "").strip())
    except _DECODE_ERRORS:
        value = None
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    elements = value if isinstance(value, list) else []
    reasons = []
    for element in elements[:n]:
        if isinstance(element, list):
            element = next((e for e in reversed(element) if isinstance(e, str)), "")
        elif isinstance(element, dict):
            element = element.get("r") or element.get("reason") or ""
        reasons.append(_reason(element) if isinstance(element, str) else "")
    return reasons + [""] * (n - len(reasons))
