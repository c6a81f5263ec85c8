"""Blocks of a results page that code writes: the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` is replaced, the rest of the page kept as it is (docs/results.md)."""
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(page, name: str, block: str) -> None:
    """Write ``block`` (which starts and ends with the markers of ``name``) in place of the page's block
    ``name``; ValueError when the page has no such markers."""
    page = Path(page)
    begin, end = markers(name)
    text = page.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{page} has no {begin} ... {end} markers to write between")
    page.write_text(text[:text.index(begin)] + block + text[text.index(end) + len(end):])
