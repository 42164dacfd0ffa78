#!/usr/bin/env python3
"""Rewrites the quoted vector outputs in mime/FORMAT-SPEC.md from the vN-output.eml
files (CRLF shown as LF). A block to fill is a fenced block right after a line
`<!-- vector N output -->`. Run from this folder after make_vectors.py."""
import re, sys

SPEC = "../../../../mime/FORMAT-SPEC.md"
text = open(SPEC, encoding="utf-8").read()

def fill(m):
    n = m.group(1)
    out = open(f"v{n}-output.eml", "rb").read().replace(b"\r\n", b"\n").decode("utf-8")
    return f"<!-- vector {n} output -->\n```\n{out}```\n"

new, count = re.subn(r"<!-- vector (\d+) output -->\n```\n.*?```\n", fill, text, flags=re.S)
open(SPEC, "w", encoding="utf-8").write(new)
print(f"{count} vector blocks quoted")
