"""A generated section of README.md: the text between two marker lines, replaced whole."""

from __future__ import annotations


def replace_between(readme: str, begin: str, end: str, body: str) -> str:
    """`readme` with the text between the `begin` and `end` markers replaced by `body`."""
    start, stop = readme.find(begin), readme.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"README.md needs the markers {begin!r} and {end!r}, in that order")
    return readme[: start + len(begin)] + "\n" + body + "\n" + readme[stop:]
