"""PALR's answers: the JSON pairs the rank prompt asks for, read strictly, else repaired.

`parse_ranking` reads `[[3,"tense heist"]]` (and the object form `[{"i": 3, "r": "..."}]` of v1), and
repairs the usual ways a model breaks it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

__all__ = ["ParsedRanking", "parse_ranking", "PARSE_OK", "PARSE_REPAIRED", "PARSE_FALLBACK"]

PARSE_OK, PARSE_REPAIRED, PARSE_FALLBACK = "ok", "repaired", "fallback"
_MAX_REASON_CHARS = 80  # a reason longer than this is cut


@dataclass(frozen=True)
class ParsedRanking:
    indexes: tuple[int, ...]  # candidate indexes in the model's order, valid and unique
    reasons: tuple[str, ...]  # one per index, "" when the model gave none
    status: str  # PARSE_OK, PARSE_REPAIRED or PARSE_FALLBACK


_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
# One `{"i": 3, "r": "..."}` object, loosely: single quotes, unquoted keys, a cut-off tail.
_LOOSE_OBJECT = re.compile(
    r"""\{\s*["']?(?:i|index|idx|id)["']?\s*:\s*["']?(?:#|\[)?(\d+)\]?["']?"""
    r"""(?:\s*,\s*["']?(?:r|reason)["']?\s*:\s*(["'])(.*?)\2)?""", re.DOTALL)
# One `[3, "..."]` pair, loosely: `#3` (the label echoed), single quotes, a cut-off tail; `[3]` too, but
# only as a list element.
_LOOSE_PAIR = re.compile(r"""\[\s*["']?#?(\d+)["']?\s*(?:(,)\s*(?:(["'])(.*?)\3)?|\]|$)""", re.DOTALL)
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
    for element in value:
        reason: Any = ""
        if isinstance(element, list):  # the pair `[3, "reason"]` (v2)
            element, reason = (element + [None, ""])[:2]
        elif isinstance(element, dict):  # the object `{"i": 3, "r": "reason"}` (v1)
            reason = element.get("r") or element.get("reason") or ""
            key = next((k for k in ("i", "index", "idx", "id") if k in element), None)
            element = element[key] if key else element.get("title")
        index = _index(element)
        if index is None and isinstance(element, str):
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


def _embedded(text: str, titles: _Titles) -> list[_Pick] | None:
    """The first JSON list or object with picks: inside a code fence first, else anywhere in the prose.

    Trailing commas are forgiven.
    """
    decoder = json.JSONDecoder()
    for source in (*_FENCE.findall(text), text):
        cleaned = _TRAILING_COMMA.sub(r"\1", source)
        for match in re.finditer(r"[\[{]", cleaned):
            try:
                value, _ = decoder.raw_decode(cleaned, match.start())
            except _DECODE_ERRORS:
                continue
            picks = _picks_from_json(value, titles)
            if picks:
                return picks
    return None


def _loose_objects(text: str, titles: _Titles) -> list[_Pick] | None:
    """`{"i": 3, "r": ...}` objects in JSON that does not decode: single quotes, or cut off by max_tokens."""
    return [(int(m.group(1)), _reason(m.group(3))) for m in _LOOSE_OBJECT.finditer(text)] or None


def _loose_pairs(text: str, titles: _Titles) -> list[_Pick] | None:
    """`[3, "..."]` pairs in JSON that does not decode: single quotes, or cut off by max_tokens.

    A `[3]` without a reason counts only after `[` or `,`: in prose it is a label, for `_lines`.
    """
    return [(int(m.group(1)), _reason(m.group(4))) for m in _LOOSE_PAIR.finditer(text)
            if m.group(2) or m.end() == len(text) or _after_list_start(text, m.start())] or None


def _after_list_start(text: str, at: int) -> bool:
    """Whether `text[at]` follows a `[` or `,` (spaces between allowed)."""
    return text[max(0, at - 32):at].rstrip().endswith(("[", ","))


def _lines(text: str, titles: _Titles) -> list[_Pick] | None:
    """One pick per line: a title, else a `#3` or `[3]` label, else a leading `3.` (the answer of a naive prompt)."""
    picks = []
    for line in text.splitlines():
        line = line.replace("**", "")
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
_REPAIRS = (_embedded, _loose_pairs, _loose_objects, _lines)


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
