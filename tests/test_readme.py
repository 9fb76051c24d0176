"""The README stays a short entry page whose links, set-up commands and `sparrow-llm` commands are real."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from sparrow_llm.cli.parser import build_parser
from sparrow_llm.config import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MAX_LINES = 200
SETUP_COMMANDS = ("demo", "test")  # `make demo`, `make test`

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", _text(path), flags=re.S | re.M)  # no headings inside code blocks
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def _local_links(path: Path) -> list[tuple[Path, str]]:
    """(target file, anchor) of every relative link of a markdown file."""
    links = []
    for target in _LINK.findall(_text(path)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        links.append(((path.parent / file).resolve() if file else path, anchor))
    return links


def test_readme_is_short():
    lines = _text(README).splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_links_every_docs_page_it_names_and_they_exist():
    docs_links = [t for t in _LINK.findall(_text(README)) if t.startswith("docs/")]
    assert docs_links, "the README links no page under docs/"
    for target in docs_links:
        file = target.partition("#")[0]
        assert file.endswith((".md", ".png")), target  # a page, or a screenshot of the comparison page
        assert (REPO_ROOT / file).is_file(), f"README.md links {target}, which does not exist"


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path):
    for file, anchor in _local_links(page):
        assert file.exists(), f"{page.name} links {file}, which does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"{page.name} links #{anchor} of {file.name}, which has no such heading"


def test_the_setup_commands_are_makefile_targets():
    named = set(re.findall(r"^make (\w+)", _text(README), flags=re.M))
    assert set(SETUP_COMMANDS) <= named, f"the README's set-up block names {sorted(named)}"
    targets = set(re.findall(r"^([\w-]+):", _text(REPO_ROOT / "Makefile"), flags=re.M))
    assert named <= targets, f"make targets named in the README but missing from the Makefile: {named - targets}"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_every_sparrow_llm_command_shown_exists(page: Path):
    """Command lines (inline code that starts with `sparrow-llm `, code-block lines that do; not prose): each
    subcommand, action and flag is one the parser has."""
    commands = _subcommands(build_parser())
    lines = re.findall(r"(?:`|^)sparrow-llm ([^`\n]*)", _text(page), flags=re.M)
    assert lines or page != README, "the README shows no `sparrow-llm` command"
    for line in lines:
        command, _, rest = line.partition(" ")
        assert command in commands, f"{page.name}: `sparrow-llm {command}` does not exist"
        parsers = [commands[command]]
        sub = _subcommands(parsers[0])
        if sub:
            actions = [a for a in re.split(r"\\?\|", rest.split(" ")[0]) if a]
            assert actions, f"{page.name}: `sparrow-llm {command}` without its action"
            for action in actions:
                assert action in sub, f"{page.name}: `sparrow-llm {command} {action}` does not exist"
            parsers = [sub[a] for a in actions]
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            for parser in parsers:
                assert flag in parser._option_string_actions, f"{page.name}: `sparrow-llm {line}`: no {flag}"
