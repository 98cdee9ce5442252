"""The commands daskscore prints for the user to run again (after Ctrl-C: ``Start again
with``, ``Go on with``, ``Upload it with``), secrets masked as in every log.

The command is the one typed, but the value of a secret environment variable given with
``--set settings.environment_variables.NAME=VALUE`` (``NAME`` holding ``KEY``, ``TOKEN``,
``SECRET`` or ``PASSWORD``) is written ``"${NAME:?}"``: the shell puts the variable ``NAME``
there when the line is run, and refuses to run it when ``NAME`` is not set (rather than
run the job with an empty value).  Any other secret the job's logs mask that the command
holds (such a value given again elsewhere on it, a storage variable's secret) is written
``***``.  A note under the command says what to give again.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from daskscore.config.settings import SECRET_MARKERS, redact
from daskscore.io.storesecrets import job_secrets

#: the key prefix of an environment variable given with ``--set``
ENV_KEY = "settings.environment_variables."


def _secrets(overrides: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The ``--set`` items (as typed) that give a secret variable a value: item -> (the item
    up to its value, the variable's name)."""
    found: dict[str, tuple[str, str]] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        name = key.strip().removeprefix(ENV_KEY)
        if not (sep and value and key.strip().startswith(ENV_KEY)) or "." in name:
            continue
        if any(marker in name.upper() for marker in SECRET_MARKERS):
            found[item] = (item[: len(key) + 1], name)
    return found


def _ends(word: str, item: str) -> bool:
    """Whether ``word`` is an option given ``item`` (``--set=ITEM``, ``-sITEM``)."""
    return word.startswith("-") and word.endswith(item)


def command_line(argv: Sequence[str], overrides: Sequence[str]) -> tuple[str, list[str]]:
    """``daskscore ARGV`` as a line to run in a POSIX shell, its secrets masked (see the
    module), and the notes to print under it.  ``overrides``: the ``--set`` items of ``argv``
    as the parser read them (each the end of one word of ``argv``: ``--set ITEM``,
    ``--set=ITEM``)."""
    given = _secrets(overrides)
    values = {name: item[len(head) :] for item, (head, name) in given.items()}
    hidden = job_secrets(values)
    words, named, starred = ["daskscore"], [], False
    for word in argv:
        item = next((i for i in given if word == i or _ends(word, i)), None)
        if item is not None:
            head, name = given[item]
            text = word[: len(word) - len(item)] + head
            if name.isidentifier() and name.isascii():
                words.append(shlex.quote(text) + f'"${{{name}:?}}"')
                named.append(name)
                continue
            word, starred = text + "***", True
        shown = redact(word, hidden)
        starred = starred or shown != word
        words.append(shlex.quote(shown))
    notes = []
    for name in dict.fromkeys(named):
        notes.append(
            f"(the value given for {name} is not shown: export {name}=... first, or write "
            f'the value in place of "${{{name}:?}}")'
        )
    if starred:
        notes.append("(*** stands for a secret value that is not shown: write it in its place)")
    return " ".join(words), notes
