"""The README and the docs: every relative link resolves, every docs page is reachable from the README, and the
README stays a user's guide (at most 300 lines). Links to the web are not followed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, *sorted((ROOT / "docs").glob("*/*.md")), *sorted((ROOT / "projects").glob("*/README.md"))]

# [text](target) and ![alt](target), with an optional "title"; code is stripped first (a link there is not one).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    return LINK.findall(text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text()))}


def _local(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto:, ...


def _broken(page: Path) -> list[str]:
    broken = []
    for target in filter(_local, _links(page)):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not (dest.is_file() or dest.is_dir()):
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page):
    broken = _broken(page)
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for target in filter(_local, _links(page)):
            dest = (page.parent / target.partition("#")[0]).resolve()
            if dest.suffix == ".md" and dest.is_file() and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    unreachable = [str(p.relative_to(ROOT)) for p in DOCS if p.resolve() not in seen]
    assert not unreachable, f"docs pages no link from the README leads to: {unreachable}"


def test_the_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; depth belongs in docs/"


def test_the_link_checker_finds_broken_links(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A heading, with punctuation\n")
    page.write_text(
        "[ok](other.md) [ok](other.md#a-heading-with-punctuation) [web](https://example.org/x.md)\n"
        "`[code](missing.md)` [bad](missing.md) [bad anchor](other.md#nope)\n"
        "```\n[fenced](missing_too.md)\n```\n"
    )
    targets = [t for t in _links(page) if _local(t)]
    assert targets == ["other.md", "other.md#a-heading-with-punctuation", "missing.md", "other.md#nope"]
    assert _broken(page) == ["missing.md: no such file", "other.md#nope: no heading #nope in other.md"]
