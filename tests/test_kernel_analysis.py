"""Data-analysis helpers in a real kernel: variables in prompts, errors explained, code handed back."""

from __future__ import annotations

import pytest
from fake_dashscope import Stream
from helpers import assert_usage_error

pytestmark = pytest.mark.kernel

FIX = "The list is empty, so the mean divides by zero.\n\n```python\nvalues = [1, 2]\nprint(sum(values) / len(values))\n```\n"


def test_a_dataframe_becomes_a_compact_summary_in_the_request(fresh):
    pytest.importorskip("pandas")
    fresh.run("import pandas as pd\ndf = pd.DataFrame({'city': ['Paris', 'Lima', None] * 50, 'temp': range(150)})")
    run = fresh.run("%%qwen\nWhat is wrong with {df}?")
    assert run.status == "ok", run.error_text
    sent = fresh.server.requests[-1].body["messages"][-1]["content"][0]["text"]
    assert sent.startswith("What is wrong with DataFrame `df`: 150 rows × 2 columns")
    assert "| temp | int64 | 150 |" in sent and "First rows:" in sent and len(sent) < 4100


def test_in_and_out_work_as_names(fresh):
    fresh.run("21 * 2")
    count = int(fresh.run("print(len(In) - 2)").stdout)
    fresh.run(f"%%qwen\nWhy is {{Out[{count}]}} the answer to {{In[{count}]}}?")
    sent = fresh.server.requests[-1].body["messages"][-1]["content"][0]["text"]
    assert sent == "Why is 42 the answer to 21 * 2?"


def test_explain_sends_the_traceback_and_the_failing_cell(fresh):
    fresh.run("import sys\nfor _n in ('last_type', 'last_value', 'last_traceback'):\n    sys.__dict__.pop(_n, None)")
    nothing = fresh.run("%qwen explain")
    assert "Nothing to explain yet" in nothing.data("text/plain")[0]
    failed = fresh.run("values = []\nmean = sum(values) / len(values)")
    assert failed.status == "error"
    fresh.server.queue(Stream(text=FIX))
    run = fresh.run("%qwen explain")
    assert run.status == "ok", run.error_text
    sent = fresh.server.requests[-1].body["messages"][-1]["content"][0]["text"]
    assert "mean = sum(values) / len(values)" in sent  # the cell's source
    assert "ZeroDivisionError: division by zero" in sent and "Traceback" in sent
    assert "The list is empty" in run.markdown


def test_code_puts_the_main_block_in_a_new_cell_and_output_stores_it(fresh):
    fresh.server.queue(Stream(text=FIX))
    run = fresh.run("%%qwen --code -o snippet\nFix my mean")
    payload = run.reply["payload"]
    assert payload == [{"source": "set_next_input", "text": "values = [1, 2]\nprint(sum(values) / len(values))", "replace": False}]
    notes = " ".join(run.data("text/plain"))
    assert "new cell below" in notes and "`snippet`" in notes
    assert fresh.run("print(snippet)").stdout == "values = [1, 2]\nprint(sum(values) / len(values))\n"


def test_output_stores_the_answer_text(fresh):
    fresh.server.queue(Stream(text="Plain *answer*."))
    fresh.run("%%qwen -o reply\nSay something")
    assert fresh.run("print(repr(reply))").stdout.strip() == "'Plain *answer*.'"
    bad = fresh.run("%%qwen -o 2bad\nHi")
    assert_usage_error(bad, "variable name")


def test_code_without_a_code_block_says_so(fresh):
    run = fresh.run("%%qwen --code\nNo code please")
    assert run.reply["payload"] == []
    assert any("no code block" in t for t in run.data("text/plain"))
