"""PALR's prompts: templates on disk rendered token-thrifty,.

The rank prompt lists the recent history grouped by rating level, without genres (the profile
carries the genre taste): `4.5: Heat (1995); Alien (1979)`; it labels candidates with short
indexes (`#3 Heat (1995)|Action Crime`) and asks for the JSON list of their indexes `[3,17,42]`, so
neither titles, ids nor reasons are repeated in the answer (the served top's reasons are the reasons
prompt's). `parsing.parse_ranking` reads that answer (and the pairs `[[3,"tense heist"]]` and objects
`[{"i": 3, "r": "..."}]` of earlier templates), and repairs the usual ways a model breaks it. The profile
prompt groups the history the same way but keeps the genres, since the profile is where the genre taste is
summarised; it asks for four keyword lines, the last `Loved:`.

The reasons prompt shows the liked history and the served top's movies and asks for one short reason per
movie, `["tense heist like Heat", ...]` (`parsing.parse_reasons`).

Every answer has an end (`PromptRequest.stop`) and a cap sized from its format: a local model stops at the
end (the profile after its `Loved:` line, the rank answer at its `]`), the cap only bounds a broken one.

The choose prompt is for a model whose logits can be read (LlamaRec's verbalizer): the user's recent
liked movies and the candidates labelled with one letter each (`B. Heat (1995)|Action Crime`); the
answer is never generated, each letter's logit as the answer's first token is the candidate's score.
"""
from __future__ import annotations

import hashlib

from pathlib import Path
from string import Template
from typing import Callable, Sequence

from ...config import ConfigError, LLMSettings
from ...domain import MovieMeta, Rated, movie_label, movie_text, spoken_title
from ...schema import LIKED_RATING
from ..llm.base import IndexList, PromptRequest

__all__ = [
    "Rated", "PromptRequest", "Prompts", "naive_rank_prompt", "movie_label", "movie_text", "PROMPT_VERSION",
    "OPTION_LABELS", "CHOICE_HISTORY", "liked_history", "reasons_end",
]

PROMPT_VERSION = "v2"

# Answer budgets (caps, not costs): a profile of four keyword lines; an index (`17,`) is two or three tokens
# (digits are single tokens); a reason of at most five words (`"dark comedy like Fargo",`) about ten.
_PROFILE_MAX_TOKENS = 160
_TOKENS_PER_INDEX = 4
_TOKENS_PER_REASON = 12
_FORMAT_TOKENS = 4  # the brackets, and a space or newline a model adds
# Where each answer ends: the profile's last keyword line, the rank answer's list, the reasons' list of strings.
PROFILE_END = r"Loved:[^\n]*\S[^\n]*\n"
RANK_END = r"\]"
REASONS_END = r"\"\s*\]"  # or the n-th string's closing quote: `reasons_end(n)`
# The placeholders each template may use.
_FIELDS = {"profile": ("history",), "rank": ("profile", "history", "candidates", "top_n"),
           "choose": ("profile", "history", "candidates"), "reasons": ("profile", "history", "candidates")}
# The choose prompt's candidate labels: one token each in common tokenizers (checked by the backend).
OPTION_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Liked movies the choose prompt shows (LlamaRec: at most 20): ten keep a prompt near 400 tokens.
CHOICE_HISTORY = 10


def _compact_text(movie: MovieMeta) -> str:
    """`Title (1999)|Genre Genre`: a candidate, or a history row of the profile prompt (genre names have no spaces)."""
    return f"{movie_label(movie)}|{' '.join(movie.genres) or '-'}"


def _choice_text(movie: MovieMeta) -> str:
    """`The Usual Suspects|Crime Mystery`: no year or alternative title (a year alone is six tokens)."""
    return f"{spoken_title(movie)}|{' '.join(movie.genres) or '-'}"


def _by_rating(rows: Sequence[Rated], text: Callable[[MovieMeta], str]) -> str:
    """One line per rating level, best first, its movies oldest first: `4.5: Heat (1995); Alien (1979)`."""
    levels: dict[float, list[str]] = {}
    for row in rows:
        levels.setdefault(row.rating, []).append(text(row.movie))
    return "\n".join(f"{rating:g}: {'; '.join(titles)}" for rating, titles in sorted(levels.items(), reverse=True))


def reasons_end(n: int) -> str:
    """The reasons answer's end: its list closed, or its `n`-th string (a small model writes more than asked)."""
    return f'{REASONS_END}|^\\["[^"]*"(?:[^"]*"[^"]*"){{{max(n - 1, 0)}}}'


class Prompts:
    """The PALR templates of one version (`profile.<version>.txt`, `rank.<version>.txt`)."""

    def __init__(self, directory: Path, *, version: str = PROMPT_VERSION, history_items: int = 50):
        if history_items < 1:
            raise ConfigError(f"history_items must be >= 1, got {history_items}")
        self.directory = Path(directory)
        self.version = version
        self.history_items = history_items
        self._profile = self._load("profile")
        self._rank = self._load("rank")
        # Loaded when first asked for: chat backends never need the choose template, a backend without text of
        # its own (`local-minilm`) never the reasons one.
        self._later: dict[str, Template] = {}

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> "Prompts":
        return cls(settings.prompts_dir, history_items=settings.history_items)

    def _load(self, step: str) -> Template:
        path = self.directory / f"{step}.{self.version}.txt"
        try:
            template = Template(path.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            raise ConfigError(f"prompt template {path} not found (SPARROW_LLM_PROMPTS_DIR)") from None
        # Rendered once here, so that a broken override fails at startup, not on every user.
        try:
            template.substitute(dict.fromkeys(_FIELDS[step], ""))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"prompt template {path} is invalid ({type(exc).__name__}: {exc}); "
                              f"it may use ${', $'.join(_FIELDS[step])}, and $$ for a dollar sign") from None
        return template

    def template_key(self, step: str) -> str:
        """A short hash of the step's template text: an edited template (same version name) is a new one."""
        return hashlib.sha256(self._template(step).template.encode()).hexdigest()[:8]

    def _template(self, step: str) -> Template:
        if step not in self._later:
            self._later[step] = self._load(step)
        return self._later[step]

    def _recent(self, history: Sequence[Rated]) -> tuple[Rated, ...]:
        return tuple(history[-self.history_items:])

    def profile_request(self, history: Sequence[Rated]) -> PromptRequest:
        """PALR step 1 over the most recent `history_items` rows of `history` (oldest first)."""
        recent = self._recent(history)
        text = self._profile.substitute(history=_by_rating(recent, _compact_text))
        return PromptRequest("profile", self.version, ({"role": "user", "content": text},),
                             _PROFILE_MAX_TOKENS, recent, stop=PROFILE_END, prefill="Likes:")

    def rank_request(self, history: Sequence[Rated], candidates: Sequence[MovieMeta], profile: str,
                     top_n: int) -> PromptRequest:
        """PALR step 2: pick at most `top_n` of `candidates` (labelled by index) for this user."""
        recent = self._recent(history)
        text = self._rank.substitute(
            profile=profile.strip() or "-",
            history=_by_rating(recent, movie_label),
            candidates="\n".join(f"#{i} {_compact_text(m)}" for i, m in enumerate(candidates)),
            top_n=top_n,
        )
        return PromptRequest("rank", self.version, ({"role": "user", "content": text},),
                             top_n * _TOKENS_PER_INDEX + _FORMAT_TOKENS, recent, tuple(candidates), profile, top_n,
                             stop=RANK_END, prefill="[", answer=IndexList(len(candidates), top_n))

    def reasons_request(self, history: Sequence[Rated], movies: Sequence[MovieMeta],
                        profile: str = "") -> PromptRequest:
        """One short reason for each of `movies` (a served list's top), from `liked_history(history)`."""
        liked = liked_history(history)
        text = self._template("reasons").substitute(
            profile=profile.strip() or "-",
            history="\n".join(_choice_text(r.movie) for r in liked),
            candidates="\n".join(_choice_text(m) for m in movies),
        )
        return PromptRequest("reasons", self.version, ({"role": "user", "content": text},),
                             len(movies) * _TOKENS_PER_REASON + _FORMAT_TOKENS, liked, tuple(movies), profile,
                             len(movies), stop=reasons_end(len(movies)), prefill='["')

    def choose_request(self, history: Sequence[Rated], candidates: Sequence[MovieMeta],
                       profile: str = "") -> PromptRequest:
        """The verbalizer's prompt: `liked_history(history)` and at most 26 candidates labelled A, B, ..."""
        if not 1 <= len(candidates) <= len(OPTION_LABELS):
            raise ValueError(f"a choose prompt takes 1 to {len(OPTION_LABELS)} candidates, got {len(candidates)}")
        liked = liked_history(history)
        options = tuple(OPTION_LABELS[:len(candidates)])
        text = self._template("choose").substitute(
            profile=profile.strip() or "-",
            history="\n".join(_choice_text(r.movie) for r in liked),
            candidates="\n".join(f"{o}. {_choice_text(m)}" for o, m in zip(options, candidates)),
        )
        return PromptRequest("choose", self.version, ({"role": "user", "content": text},), 1, liked,
                             tuple(candidates), profile, 0, options)

    def uses_profile(self, step: str) -> bool:
        """Whether the step's template shows the profile (the choose template of v2 does not)."""
        template = {"profile": self._profile, "rank": self._rank}.get(step) or self._template(step)
        return "$profile" in template.template or "${profile}" in template.template


def liked_history(history: Sequence[Rated], n: int = CHOICE_HISTORY) -> tuple[Rated, ...]:
    """The last `n` rows rated >= 3.5, oldest first; the last `n` rows when none is."""
    liked = [r for r in history if r.rating >= LIKED_RATING]
    return tuple((liked or list(history))[-n:])


def naive_rank_prompt(history: Sequence[Rated], candidates: Sequence[MovieMeta], profile: str,
                      top_n: int) -> list[dict]:
    """The naive PALR prompt (full rows, ids and titles; a free-text answer naming titles).

    Only the benchmark baseline for the token and parse comparison; the ranker never sends it.
    """
    def row(m: MovieMeta) -> str:
        return f"Movie ID: {m.movie_id}, Title: {movie_label(m)}, Genres: {', '.join(m.genres)}"

    text = "\n".join([
        "You are a movie recommender system.",
        f"Here is the profile of the user: {profile}",
        "The user has watched and rated the following movies:",
        *(f"{row(r.movie)}, Rating: {r.rating:g} out of 5" for r in history),
        "Here is the list of candidate movies:",
        *map(row, candidates),
        f"Based on the user's profile and watch history, recommend {top_n} movies from the candidate list "
        "that the user is most likely to enjoy, ordered from the most to the least likely. For each "
        "recommendation give the full movie title and explain why you recommend it.",
    ])
    return [{"role": "user", "content": text}]
