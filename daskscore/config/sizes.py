"""``settings.mini_batch_size``, read once into a :class:`MiniBatchSize`.

Azure counts a file-mode mini-batch in files (an integer).  In tabular mode (ParallelRunStep's
tabular datasets) it is a byte size such as ``'10MB'`` (KB = 1024), and daskscore also takes a
row count (``'500 rows'``); a size written that way also switches tabular mode on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from daskscore.errors import ConfigError

_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_BYTES_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:([kmg])i?b?|b)?", re.IGNORECASE)
_ROWS_RE = re.compile(r"rows?\s*:\s*([0-9]+)|([0-9]+)\s*rows?", re.IGNORECASE)


@dataclass(frozen=True)
class MiniBatchSize:
    """A validated ``mini_batch_size``.

    Attributes
    ----------
    value : int or str
        As the deployment file (or an override) wrote it.
    files : int or None
        Files per mini-batch, when ``value`` is an integer.
    """

    value: int | str

    @property
    def files(self) -> int | None:
        if isinstance(self.value, int):
            return self.value
        return int(self.value) if self.value.strip().isdigit() else None

    @property
    def implies_tabular(self) -> bool:
        """A byte size or a row count: only tabular inputs can be cut that way."""
        return self.files is None

    def tabular(self, where: str = "settings.mini_batch_size") -> tuple[str, int]:
        """The size of a tabular split: ``('bytes', n)`` or ``('rows', n)`` (an integer counts
        bytes, as in Azure's tabular mode)."""
        return parse_mini_batch_size(self.value, where)


def parse_mini_batch_size(
    value: int | str, where: str = "settings.mini_batch_size"
) -> tuple[str, int]:
    """Parse a tabular-mode ``mini_batch_size`` into ``('bytes', n)`` or ``('rows', n)``.

    Azure's tabular ``mini_batch_size`` is a byte size, and a bare number there means bytes, so an
    int or a string of digits gives ``('bytes', n)``.  Units are case-insensitive, may follow a
    space and may drop the trailing ``B``: ``'1024B'``, ``'10KB'``, ``'100 kb'``, ``'1.5MB'``,
    ``'1G'`` (KB = 1024, MB = 1024**2, GB = 1024**3; ``KiB`` etc. are read the same; a fraction
    of a unit is rounded down to whole bytes).  Rows are asked for explicitly: ``'rows:500'`` or
    ``'500 rows'`` give ``('rows', 500)``.

    Parameters
    ----------
    value : int or str
        The setting as written in the deployment file.
    where : str
        Where the value comes from, for the error message.

    Returns
    -------
    tuple of (str, int)
        ``('bytes', n)`` or ``('rows', n)``, with ``n >= 1``.

    Raises
    ------
    ConfigError
        The value is malformed, not positive, or of another type.

    Examples
    --------
    >>> parse_mini_batch_size("10 kb"), parse_mini_batch_size(512), parse_mini_batch_size("rows:5")
    (('bytes', 10240), ('bytes', 512), ('rows', 5))
    """
    parsed: tuple[str, int] | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        parsed = ("bytes", value)
    elif isinstance(value, str):
        text = value.strip()
        if m := _ROWS_RE.fullmatch(text):
            parsed = ("rows", int(m.group(1) or m.group(2)))
        elif (m := _BYTES_RE.fullmatch(text)) and ("." not in m.group(1) or m.group(2)):
            unit = m.group(2).lower() if m.group(2) else None
            parsed = ("bytes", int(Fraction(m.group(1)) * _UNITS[unit]))
    if parsed is None or parsed[1] < 1:
        raise ConfigError(
            f"{where} = {value!r} is not a valid tabular mini-batch size: use a positive byte "
            "size (1024, '1024B', '100KB', '10 MB', '1.5GB'; KB = 1024 bytes) or a row count "
            "('rows:500' or '500 rows')."
        )
    return parsed
