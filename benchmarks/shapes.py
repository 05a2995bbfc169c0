"""Deterministic answers of one shape each: the loads of the streaming benchmark.

An answer made of many small blocks is easy to stream; data-analysis answers are often one
long block (a script, a table, a list) or much thinking and a short answer. Each maker
returns text of exactly ``chars`` characters.
"""

from __future__ import annotations

from answer import make_answer

_WORDS = (
    "the pipeline reads each partition once and keeps a running summary so that memory stays flat "
    "while the join on customer id is checked for duplicates before any aggregation happens "
    "数据先按日期分区 then every column gets a dtype and a unit, and outliers beyond three sigma "
    "are flagged rather than dropped because the analyst may need them later "
).split()


def _fit(parts: list[str], chars: int, tail: str) -> str:
    """``parts`` joined and cut at a line end, its last line padded with spaces, then ``tail``: ``chars`` long."""
    room = chars - len(tail)
    text = "".join(parts)[:room]
    text = text[: text.rindex("\n")] if "\n" in text else text
    return text + " " * (room - len(text) - 1) + "\n" + tail


def code_block(chars: int) -> str:
    """One fenced Python block, after a line of prose."""
    head, tail = "Here is the whole script:\n\n```python\n", "```\n"
    lines: list[str] = []
    n = 0
    while sum(map(len, lines)) < chars:
        lines += [
            f"def step_{n}(frame, *, limit={n * 10}):\n",
            f'    """Clean partition {n} and return the rows that passed."""\n',
            "    kept = []\n",
            "    for row in frame.itertuples(index=False):\n",
            f"        if row.value > {n % 7} and row.unit == 'kg':  # 保留有效行\n",
            "            kept.append(row._asdict())\n",
            f"    log.info('step {n}: %d of %d rows kept', len(kept), len(frame))\n",
            "    return kept[:limit]\n",
            "\n",
        ]
        n += 1
    return head + _fit(lines, chars - len(head), tail)


def table(chars: int) -> str:
    """One GFM table with a header, aligned columns and a few inline spans."""
    head = "| id | sensor | value | unit | status | note |\n|---:|---|---:|---|:---:|---|\n"
    rows: list[str] = []
    n = 0
    while sum(map(len, rows)) < chars:
        rows.append(f"| {n} | `sensor_{n % 97}` | {n * 0.37:.2f} | kg | {'✅' if n % 3 else '❌'} | "
                    f"{_WORDS[n % len(_WORDS)]} **{_WORDS[(n * 7) % len(_WORDS)]}** |\n")
        n += 1
    return _fit([head, *rows], chars, "")


def bullet_list(chars: int) -> str:
    """One list: items with inline code and emphasis, every fifth with two nested items."""
    items: list[str] = []
    n = 0
    while sum(map(len, items)) < chars:
        words = " ".join(_WORDS[(n + k) % len(_WORDS)] for k in range(8))
        items.append(f"- Item {n}: check `col_{n}` — {words}, *then* move on\n")
        if n % 5 == 4:
            items.append(f"  - nested detail {n}.1 about **units**\n  - nested detail {n}.2 about `NaN`\n")
        n += 1
    return _fit(items, chars, "")


def paragraph(chars: int) -> str:
    """One paragraph on one line, as models write them: no line break until its end."""
    words: list[str] = []
    n = 0
    while sum(len(w) + 1 for w in words) < chars:
        word = _WORDS[n % len(_WORDS)]
        words.append(f"**{word}**" if n % 23 == 0 else (f"`{word}`" if n % 31 == 0 else word))
        n += 1
    text = " ".join(words)[: chars - 2].rstrip()
    return text + "." + " " * (chars - 2 - len(text)) + "\n"


def thinking(chars: int) -> str:
    """Plain prose in short paragraphs, as thinking streams."""
    lines: list[str] = []
    n = 0
    while sum(map(len, lines)) < chars:
        lines.append(" ".join(_WORDS[(n * 3 + k) % len(_WORDS)] for k in range(12 + n % 9)) + ".\n\n")
        n += 1
    return _fit(lines, chars, "")


def mixed(chars: int) -> str:
    """The mixed-markdown answer (headings, lists, fences, tables, quotes, CJK, emoji)."""
    return make_answer(chars)
