"""Unit tests of secret masking (``secret_values``, ``redact``): every form a secret value takes
once written down is masked whole (issue 17, item 5)."""

from __future__ import annotations

import csv
import html
import io
import json
from urllib.parse import quote

import pytest

from daskscore.config import redact, secret_values

#: Every character that repr(), JSON, HTML, CSV or a URL writes differently, around two
#: fragments that no masked text may keep.
SECRET = "Kx7Qm\"<&\\'>é\tpQ3vZ"
FRAGMENTS = ("Kx7Qm", "pQ3vZ")


def _csv_field(text: str) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow([text])
    return buf.getvalue()


#: How a secret reaches a log: raised, logged with %r, dumped, escaped, quoted, and combinations.
FORMS = {
    "literal": lambda v: f"password {v} refused",
    "repr": lambda v: f"KeyError: {v!r}",
    "repr in a list": lambda v: repr(["user", v]),
    "repr, quoted with '": lambda v: repr(f'say "{v}"'),
    "ascii": lambda v: ascii(v),
    "bytes repr": lambda v: repr(v.encode()),
    "json": lambda v: json.dumps({"password": v}),
    "json, not ascii": lambda v: json.dumps({"password": v}, ensure_ascii=False),
    "json of a repr": lambda v: json.dumps(f"KeyError: {v!r}"),
    "html": lambda v: html.escape(v),
    "html, quotes kept": lambda v: html.escape(v, quote=False),
    "html of a repr": lambda v: html.escape(f"KeyError: {v!r}"),
    "html with numeric entities": lambda v: (
        html.escape(v).replace("&quot;", "&#34;").replace("&#x27;", "&#39;")
    ),
    "csv field": _csv_field,
    "csv field of a repr": lambda v: _csv_field(f"KeyError: {v!r}"),
    "url": lambda v: f"postgres://me:{quote(v, safe='')}@db/x",
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_written_form_of_a_secret_is_masked_whole(form: str) -> None:
    secrets = secret_values({"DB_PASSWORD": SECRET})
    text = FORMS[form](SECRET)
    assert all(f in text for f in FRAGMENTS)  # (the form does hold the secret)

    masked = redact(text, secrets)

    assert not any(f in masked for f in FRAGMENTS), masked
    assert "***" in masked


def test_only_secret_variables_of_some_length_are_masked() -> None:
    secrets = secret_values(
        {"API_KEY": "abc", "HOME": "/home/me", "GITHUB_TOKEN": "ghp_1234", "db_secret": "s3cr3t!"}
    )
    assert redact("/home/me abc ghp_1234 s3cr3t!", secrets) == "/home/me abc *** ***"


def test_secret_values_come_longest_first() -> None:
    secrets = secret_values({"A_KEY": "abcd", "B_KEY": "abcdefgh"})
    assert [len(s) for s in secrets] == sorted((len(s) for s in secrets), reverse=True)
    assert redact("abcdefgh", secrets) == "***"
