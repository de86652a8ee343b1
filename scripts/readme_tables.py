"""Write the README's generated tables from the registries (bench_lib.registry): the names each key that picks a
registered thing takes (`editor`, `baselines`, `judge`, `protocol`, `dataset_format`), each with its one-line
description. tests/test_readme.py checks that the README holds exactly what this writes.

    python scripts/readme_tables.py           # rewrite README.md between the markers
    python scripts/readme_tables.py --check   # exit 1 when README.md is not up to date

Only the built-in entries are listed (a plug-in installed here is not the project's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- registry table: begin (scripts/readme_tables.py writes it) -->", "<!-- registry table: end -->"


def registry_table() -> str:
    sys.path.insert(0, str(ROOT))
    from bench_lib.options import config_fields, registry_of

    lines = ["| key | value | what it is | defined in |", "|---|---|---|---|"]
    for name, key in config_fields().items():
        registry = registry_of(key.field)
        if registry is None:
            continue
        for also in key.field.metadata["also"]:
            default = " (default)" if _default(key.field) == also else ""
            lines.append(f"| `{name}` | `{also}`{default} | {_auto_text(name)} | |")
        for entry in registry.names():
            if not registry.is_builtin(entry):
                continue
            cls = registry.get(entry)
            where = f"`{cls.__module__.replace('.', '/')}.py`"
            default = " (default)" if _default(key.field) == entry else ""
            lines.append(f"| `{name}` | `{entry}`{default} | {registry.description(entry).rstrip('.')} | {where} |")
    return "\n".join(lines)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


AUTO_TEXT = {  # the keys with a value that is not a registered name
    "dataset_format": "each format below, in its `priority` order, is asked whether it recognises the data",
    "protocol": "the protocol of the data's format when it is a known benchmark's (its `protocol`), else `default`",
}


def _auto_text(name: str) -> str:
    return AUTO_TEXT[name]


def render(text: str) -> str:
    """`text` (the README) with the table between the markers rewritten."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + registry_table() + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is out of date")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's registry table is out of date: run python scripts/readme_tables.py")
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
