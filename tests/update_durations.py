"""Refresh ``tests/durations.json`` — seconds per test file, which ``conftest.py`` uses to start
the longest files first — from a JUnit report of a whole run::

    python -m pytest --junitxml=/tmp/suite.xml && python tests/update_durations.py /tmp/suite.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(report: str) -> None:
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        # tests.engine.test_resume[.TestClass] -> tests/engine/test_resume.py
        parts = [p for p in case.get("classname", "").split(".") if not p[:1].isupper()]
        seconds["/".join(parts) + ".py"] += float(case.get("time") or 0)
    kept = {
        name: round(total)
        for name, total in sorted(seconds.items(), key=lambda kv: -kv[1])
        if round(total) >= 1 and (HERE.parent / name).is_file()
    }
    (HERE / "durations.json").write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
    print(f"{len(kept)} files, {sum(kept.values())} s")


if __name__ == "__main__":
    main(sys.argv[1])
