"""A long table's rows are read a block at a time, and blocks read while it streams are not read again:
the result is always exactly the whole table's."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_merged_outputs import _ALIGNS, _CELL_PIECES

from qwen_magic._markdown import _tables, prepare_table, table_markdown

# Lines a table's body may meet: rows of every width, and lines that are no row and end it.
_ODD_LINES = ["", "   ", "no pipe here", "a | b", "    | indented |", "> quote", "- item", "# heading", "---", "```",
              "|", "||", "| a | b | c | d | e | f |", "\\| escaped |", "<div>", "1. first", "| x |\r", "\t| tab |"]  # fmt: skip


def whole(md: str, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """``table_markdown`` reading ``md`` in one parse."""
    with monkeypatch.context() as m:
        m.setattr(_tables, "BLOCK", 10**9)
        return table_markdown(md)


def _doc(rng: random.Random) -> str:
    columns = rng.randint(1, 4)
    lines = ["| " + " | ".join(f"h{c}" for c in range(columns)) + " |",
             "|" + "|".join(rng.choice(_ALIGNS) for _ in range(columns)) + "|"]  # fmt: skip
    hostile = rng.random() < 0.3
    for _ in range(rng.randint(0, 40)):
        if rng.random() < 0.03:
            lines.append(rng.choice(_ODD_LINES))
            continue
        width = columns + rng.choice([0, 0, 0, 0, -1, 1]) if columns > 1 else columns
        pieces = _CELL_PIECES if hostile else ["a", "word", "12.5", "`code`", "**b**", "*i*", "~~s~~", "中文", " "]
        lines.append("| " + " | ".join("".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))).replace("\n", " ")
                                         for _ in range(max(1, width))) + " |")  # fmt: skip
    return "\n".join(lines) + rng.choice(["\n", "\n\n", "", "\n\n\n"])


@pytest.mark.parametrize("block", [1, 2, 3, 7])
def test_reading_in_blocks_is_reading_whole(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    rng = random.Random(block)
    docs = [_doc(rng) for _ in range(1500)]
    written = 0
    for doc in docs:
        expected = whole(doc, monkeypatch)
        _tables._rows.cache_clear()
        monkeypatch.setattr(_tables, "BLOCK", block)
        assert table_markdown(doc) == expected, doc
        written += expected is not None
    assert 300 < written < len(docs)  # both kinds are common


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.lists(st.integers(0, 4000), max_size=8))
def test_blocks_read_while_streaming_change_nothing(monkeypatch: pytest.MonkeyPatch, seed: int, block: int,
                                                    cuts: list[int]) -> None:  # fmt: skip
    """``prepare_table`` on any prefixes (a row cut anywhere) leaves the whole table's reading as it was."""
    doc = _doc(random.Random(seed))
    expected = whole(doc, monkeypatch)
    _tables._rows.cache_clear()
    monkeypatch.setattr(_tables, "BLOCK", block)
    for cut in sorted(cuts):
        prepare_table(doc[:cut])
    assert table_markdown(doc) == expected


def test_a_streamed_table_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows read ahead are not parsed again: the final reading parses only the last block."""
    doc = "| id | name |\n|--:|---|\n" + "".join(f"| {n} | `item_{n}` **{n}** |\n" for n in range(1000))
    expected = whole(doc, monkeypatch)
    _tables._rows.cache_clear()
    for end in range(0, len(doc), 300):
        prepare_table(doc[:end])
    parsed: list[str] = []
    real = _tables._parser

    def counting(*args: str) -> object:
        parser = real(*args)
        monkeypatch.setattr(parser, "parse", lambda md, *a: parsed.append(md) or type(parser).parse(parser, md, *a))
        return parser

    monkeypatch.setattr(_tables, "_parser", counting)
    assert table_markdown(doc) == expected
    assert len(parsed) == 1 and len(parsed[0]) < len(doc) / 10, [len(md) for md in parsed]


def test_a_table_that_may_fill_in_very_many_cells_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """markdown-it stops a table after 65,536 filled-in cells, counted over the whole body: such a table
    is never read in blocks, which would count afresh in each."""
    doc = "|" + " a |" * 20 + "\n|" + "---|" * 20 + "\n" + "| x |\n" * 3400
    calls: list[str] = []
    monkeypatch.setattr(_tables, "_rows", lambda md: calls.append(md) or None)
    table_markdown(doc)
    assert calls == [doc]
