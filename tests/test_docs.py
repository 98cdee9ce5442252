"""README and --help cannot drift: every command and option the CLI knows is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from daskscore import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options() -> list[tuple[str, str]]:
    found = []
    for name, sub in _subparsers().items():
        for action in sub._actions:
            found += [(name, opt) for opt in action.option_strings if opt.startswith("--")]
    return found


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"daskscore {command}" in README


@pytest.mark.parametrize(("command", "option"), _options())
def test_every_option_is_in_the_readme(command: str, option: str) -> None:
    if option == "--help":
        return
    assert re.search(rf"`{re.escape(option)}[ `=]", README), f"{option} of {command} undocumented"


def test_every_option_has_help_text() -> None:
    for sub in _subparsers().values():
        for action in sub._actions:
            assert action.help, f"{action.option_strings or action.dest} has no help"


def test_readme_opens_with_the_two_commands() -> None:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert block[0].startswith("pip install") and "daskscore run" in block[0]
    assert block[1].startswith("pip install") and "pytest" in block[1]


def test_ci_runs_the_readme_test_command() -> None:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert block[1] in ci.splitlines()
