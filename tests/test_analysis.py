"""Summaries of data values, error context and code extraction, without a kernel."""

from __future__ import annotations

import pytest

from qwen_magic._analysis import describe, explain_prompt, main_code_block, short_repr


def test_dataframe_summary_is_compact_markdown():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"city": ["Paris", "Lima", None] * 40, "temp": range(120)})
    text = describe(df, "df")
    assert text.startswith("DataFrame `df`: 120 rows × 2 columns")
    assert "| city | object | 80 |" in text or "| city | str | 80 |" in text
    assert "| temp | int64 | 120 |" in text
    assert "First rows:" in text and "Last rows:" in text and "Paris" in text
    big = pd.DataFrame({f"c{i}": range(3) for i in range(300)})
    assert len(describe(big, "big")) <= 4000


def test_series_and_array_summaries():
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    s = pd.Series([1.0, None, 3.0], name="x")
    assert "Series `s` ('x'): 3 values, dtype float64, 1 missing" in describe(s, "s")
    assert "Series `t`: 1 value, dtype int64, 0 missing" in describe(pd.Series([7]), "t")
    assert describe(pd.DataFrame({"a": [1]}), "one").startswith("DataFrame `one`: 1 row × 1 column\n")
    assert describe(pd.DataFrame({"a": [], "b": []}), "none").startswith("DataFrame `none`: 0 rows × 2 columns\n")
    a = np.arange(10_000).reshape(100, 100)
    text = describe(a, "a")
    assert "shape (100, 100), dtype int64" in text and "..." in text and len(text) < 1500


def test_other_values_are_not_described_and_reprs_are_cut():
    assert describe({"a": 1}, "d") is None
    assert len(short_repr("x" * 10_000)) <= 2000

    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert "repr failed" in short_repr(Broken())


def test_main_code_block_prefers_the_longest_python_block():
    answer = "Try:\n\n```bash\npip install x y z and more words\n```\n\n```python\nprint(1)\n```\n\n```py\nimport x\nx.run()\n```\n"
    assert main_code_block(answer) == "import x\nx.run()"
    assert main_code_block("```sql\nselect 1\n```") == "select 1"
    assert main_code_block("no code here") is None


def test_explain_prompt_carries_cell_and_traceback():
    text = explain_prompt("Traceback ...\nZeroDivisionError: division by zero", "1/0")
    assert "```python\n1/0\n```" in text and "ZeroDivisionError" in text
