"""The documentation cannot drift from the code.

* Every command and every option the CLI knows is documented in prose: each command's options
  table (`| option of `daskscore run` | meaning |`, in README.md or a page of docs/) has a row
  for each of its options and arguments, and no row for one it does not have.
* The CLI reference page is rendered from the real parser (docs/hooks.py), every command's
  ``--help``; the site builds with ``mkdocs build --strict``, so a broken link, anchor or page
  fails here.
* README.md opens with the two commands, CI runs the second verbatim, and it links every page.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from storage_emulators import in_ci

from daskscore import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = {
    path.relative_to(DOCS).as_posix(): path.read_text(encoding="utf-8")
    for path in sorted(DOCS.rglob("*.md"))
}
# where a user reads prose: the README and the pages (the CLI reference page, on disk, is only
# the marker its --help text replaces at build time, so it documents nothing here)
PROSE = {"README.md": README, **{f"docs/{name}": text for name, text in PAGES.items()}}
HELP_OPTIONS = ("-h", "--help")


def _commands(
    parser: argparse.ArgumentParser | None = None, name: str = "daskscore"
) -> dict[str, argparse.ArgumentParser]:
    """Every command, subcommands included: ``{"daskscore cluster start": parser, ...}``."""
    parser = parser or cli._parser()
    found = {name: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found.update(_commands(sub, f"{name} {sub_name}"))
    return found


def _arguments(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """What a user types: each option's strings (``("--input", "-i")``), or a positional's name."""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue  # the subcommands are commands of their own
        if action.option_strings:
            if not set(action.option_strings) <= set(HELP_OPTIONS):
                found.append(tuple(action.option_strings))
        else:
            found.append((action.metavar or action.dest.upper(),))
    return found


ALL = _commands()
DOCUMENTED = [(name, args) for name, parser in ALL.items() for args in _arguments(parser)]


def _option_tables() -> dict[str, list[tuple[str, list[str]]]]:
    """Each command's options tables in the prose: ``{command: [(where, [row's names])]}``.

    A table documents a command's options when its header is ``| option of `COMMAND` | ...``;
    a row names what its first cell holds in backticks: `` `--input PATH`, `-i` `` names
    ``--input`` and ``-i``.
    """
    tables: dict[str, list[tuple[str, list[str]]]] = {}
    for where, text in PROSE.items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            header = re.match(r"\|\s*option of `(daskscore[^`]*)`\s*\|", line)
            if not header:
                continue
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                first = row.split("|")[1]
                rows.append([token.split()[0] for token in re.findall(r"`([^`]+)`", first)])
            tables.setdefault(header.group(1), []).append((where, [n for r in rows for n in r]))
    return tables


TABLES = _option_tables()


@pytest.mark.parametrize("command", sorted(ALL))
def test_every_command_is_documented(command: str) -> None:
    places = [where for where, text in PROSE.items() if command in text]
    assert places, f"{command!r} is in no page of docs/ and not in README.md"


@pytest.mark.parametrize(
    ("command", "names"), DOCUMENTED, ids=[f"{c}:{n[0]}" for c, n in DOCUMENTED]
)
def test_every_option_is_in_its_commands_options_table(command: str, names: tuple[str]) -> None:
    tables = TABLES.get(command)
    assert tables, f"no '| option of `{command}` | meaning |' table in README.md or docs/"
    for name in names:
        assert any(name in rows for _, rows in tables), (
            f"{name} of {command!r} has no row in its options table "
            f"({', '.join(where for where, _ in tables)})"
        )


def test_options_tables_name_only_what_the_commands_have() -> None:
    for command, tables in TABLES.items():
        assert command in ALL, f"an options table documents {command!r}, which is no command"
        known = {name for names in _arguments(ALL[command]) for name in names}
        known |= set(HELP_OPTIONS)
        for where, rows in tables:
            stale = sorted(set(rows) - known)
            assert not stale, f"{where}: the table of {command!r} documents {stale}, not its own"


def test_every_option_and_command_has_help_text() -> None:
    for command, parser in ALL.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:  # the commands' one-line help
                    assert choice.help, f"{command} {choice.dest} has no help"
            else:
                assert action.help, f"{action.option_strings or action.dest} has no help"


# ------------------------------------------------------------------ the generated CLI reference


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("daskscore_docs_hooks", DOCS / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_every_commands_help() -> None:
    hooks = _hooks()
    assert hooks.MARKER in PAGES["reference/cli.md"]
    rendered = hooks.render_cli_reference()
    for command, parser in ALL.items():
        assert f"## `{command}`\n\n```text\n$ {command} --help\n" in rendered
        usage = " ".join(parser.format_usage().split()[1:])  # re-wrapped at the page's width
        assert usage in " ".join(rendered.split())
        for action in parser._actions:
            for option in action.option_strings:
                assert option in rendered, f"{option} of {command} is not in the CLI reference"
    assert "daskscore cluster start --help" in rendered


# ------------------------------------------------------------------ README


def _readme_commands() -> list[str]:
    return README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()


def test_readme_opens_with_the_two_commands() -> None:
    block = _readme_commands()
    assert len(block) == 2
    assert block[0].startswith("pip install") and "daskscore run" in block[0]
    assert block[1].startswith("pip install") and "pytest" in block[1]


def test_ci_runs_the_readme_test_command() -> None:
    block = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert block[1] in ci.splitlines()


@pytest.mark.parametrize("page", sorted(PAGES))
def test_readme_links_every_docs_page(page: str) -> None:
    link = rf"\]\(docs/{re.escape(page)}(#[^)]*)?\)"
    assert re.search(link, README), f"README.md links no docs/{page}"


def test_readme_links_lead_to_files() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which is missing"


def test_every_page_is_in_the_sites_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return []

    assert sorted(pages(config["nav"])) == sorted(PAGES)
    # the site builds and reads without the network: no web fonts, no social cards
    assert config["theme"]["font"] is False
    assert not any("social" in str(plugin) for plugin in config["plugins"])


# ------------------------------------------------------------------ the site


def _site_tools() -> None:
    """Skip (fail in CI) when the site's tools, the ``docs`` extra, are not installed."""
    missing = []
    for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            missing.append(name)
    if missing:
        message = f"the site's tools are missing ({', '.join(missing)}): pip install -e '.[docs]'"
        if in_ci():
            pytest.fail(f"{message} (CI is set: the docs build is required)", pytrace=False)
        pytest.skip(message)


def _text(html: str) -> str:
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path: Path) -> None:
    _site_tools()
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    cli_page = _text((site / "reference" / "cli" / "index.html").read_text(encoding="utf-8"))
    for command, parser in ALL.items():
        assert f"$ {command} --help" in cli_page
        for action in parser._actions:
            for option in action.option_strings:
                assert option in cli_page, f"{option} of {command} is not on the CLI page"
    api_page = _text((site / "reference" / "api" / "index.html").read_text(encoding="utf-8"))
    for name in ("run", "score", "open_session", "replay", "validate", "load_deployment"):
        assert re.search(rf"\b{name}\s*\(", api_page), f"daskscore.{name} is not in the API page"
    for name in ("JobResult", "JobFailed", "UsageError", "ErrorThresholdExceeded"):
        assert name in api_page
    assert "Parameters:" in api_page  # the numpydoc sections were parsed, not shown raw
    assert ":func:" not in api_page
    for page in PAGES:
        html = page.removesuffix(".md")
        html = "index.html" if html == "index" else f"{html}/index.html"
        assert (site / html).exists(), f"docs/{page} was not built"
