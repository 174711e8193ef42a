"""Where the benchmarks leave their results: OUT.json (the figures) and OUT.md (the table)."""
from __future__ import annotations

import json
import os


def save_results(out: str, figures: object, table: str) -> None:
    """Print `table` and write it to OUT.md, and `figures` to OUT.json."""
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=1)
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write(table)
