"""Just enough of a JSON parser to read the keys of a file's first record without reading the file: format
detection looks at them (RE-Edit's records hold an image each as base64, so one record can be megabytes)."""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Optional


def first_record_keys(path: Path) -> Optional[set[str]]:
    """The keys of the first record of a JSON list (or of the first non-empty list of an object), or of a JSONL
    file; None when there is none or the file is not JSON. The file is streamed: a record of any size is read
    through (RE-Edit's records hold an image each as base64) while only the keys are kept, and nothing after
    the first record is read."""
    try:
        with open(path, "rb") as f:
            stream = _JsonStream(f)
            first = stream.peek()
            if first == "{" and path.suffix == ".jsonl":
                return stream.keys()
            if first == "[" and path.suffix == ".json":
                stream.pos += 1
                return stream.keys() if stream.peek() == "{" else None
            if first == "{" and path.suffix == ".json":  # {category: [records]}
                stream.pos += 1
                while stream.peek() == '"':
                    stream.string(keep=False)
                    stream.expect(":")
                    if stream.peek() == "[":
                        stream.pos += 1
                        if stream.peek() == "{":
                            return stream.keys()
                        if stream.peek() != "]":
                            return None
                        stream.pos += 1
                    else:
                        stream.skip()
                    if not stream.take(","):
                        return None
            return None
    except ValueError:  # not JSON (the manifest reader says where)
        return None


_STRING_STOP = re.compile(r'["\\]')
_SCALAR_END = re.compile(r"[,\]}\s]")


class _JsonStream:
    """A JSON text read a chunk at a time, with what has been consumed dropped: enough of a parser to walk over
    values of any size (long strings are skipped with a regular-expression search, not character by character)."""

    def __init__(self, f, chunk: int = 1 << 20):
        self.f, self.chunk = f, chunk
        self.text, self.pos = "", 0
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")

    def fill(self) -> bool:
        """Read the next chunk (False at the end of the file)."""
        data = self.f.read(self.chunk)
        self.text = self.text[self.pos:] + self.decoder.decode(data, final=not data)
        self.pos = 0
        return bool(data)

    def peek(self) -> str:
        """The next character that is not white space ("" at the end), not consumed."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def take(self, char: str) -> bool:
        if self.peek() != char:
            return False
        self.pos += 1
        return True

    def expect(self, char: str) -> None:
        if not self.take(char):
            raise ValueError(f"expected {char!r}")

    def string(self, *, keep: bool) -> Optional[str]:
        """The string that starts here (its text when `keep`, else it is only skipped)."""
        self.expect('"')
        raw = []
        while True:
            stop = _STRING_STOP.search(self.text, self.pos)
            if stop is None or (stop.group() == "\\" and stop.end() >= len(self.text)):
                end = stop.start() if stop else len(self.text)  # an escape cut by the chunk waits for the next
                if keep:
                    raw.append(self.text[self.pos:end])
                self.pos = end
                if not self.fill():
                    raise ValueError("unterminated string")
                continue
            end = stop.end() + (stop.group() == "\\")  # a backslash and the character it escapes
            if keep:
                raw.append(self.text[self.pos:end])
            self.pos = end
            if stop.group() == '"':
                return json.loads('"' + "".join(raw)) if keep else None

    def skip(self) -> None:
        """Walk over the value that starts here."""
        char = self.peek()
        if char == '"':
            self.string(keep=False)
        elif char in ("{", "["):
            depth = 0
            while True:
                char = self.peek()
                if char == "":
                    raise ValueError("unterminated value")
                if char == '"':
                    self.string(keep=False)
                    continue
                self.pos += 1
                depth += {"{": 1, "[": 1, "}": -1, "]": -1}.get(char, 0)
                if depth == 0:
                    return
        elif char:
            while (end := _SCALAR_END.search(self.text, self.pos)) is None:
                self.pos = len(self.text)
                if not self.fill():
                    return
            self.pos = end.start()
        else:
            raise ValueError("no value")

    def keys(self) -> set[str]:
        """The keys of the object that starts here (its values are skipped)."""
        self.expect("{")
        keys: set[str] = set()
        if self.take("}"):
            return keys
        while True:
            keys.add(self.string(keep=True))
            self.expect(":")
            self.skip()
            if self.take("}"):
                return keys
            self.expect(",")
