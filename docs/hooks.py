"""MkDocs hooks of daskscore's documentation site (``hooks:`` in mkdocs.yml).

* The CLI reference (``reference/cli.md``) is rendered at build time from the real parser,
  :func:`daskscore.cli.parser.build_parser`: the page holds a marker, replaced by the
  ``--help`` of every command and subcommand, so the reference cannot drift from the code.
* The API reference's docstrings use Sphinx roles (``:func:`run```); on the site the role's
  name is dropped and the name stays as code.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from typing import Any

MARKER = "<!-- daskscore-cli-reference -->"
WIDTH = "100"
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|exc|data|obj|const):(?=<code)")


def commands(
    parser: argparse.ArgumentParser, name: str = "daskscore"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command of ``parser``, itself first, depth first: ``("daskscore run", parser)``."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from commands(sub, f"{name} {sub_name}")


def render_cli_reference() -> str:
    """The Markdown of the CLI reference: each command's ``--help``, as the command prints it."""
    from daskscore.cli.parser import build_parser

    saved = {key: os.environ.get(key) for key in ("COLUMNS", "NO_COLOR")}
    os.environ["COLUMNS"], os.environ["NO_COLOR"] = WIDTH, "1"  # the same text on any terminal
    try:
        sections = [
            f"## `{name}`\n\n```text\n$ {name} --help\n{parser.format_help().rstrip()}\n```\n"
            for name, parser in commands(build_parser())
        ]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return "\n".join(sections)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render_cli_reference())
    return markdown


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    return _ROLE.sub("", html)
