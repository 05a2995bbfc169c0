"""Function calling through a real kernel: the tool loop as the server and a frontend see it."""

from __future__ import annotations

import json
import time

import pytest
from fake_dashscope import Stream, ToolCall
from helpers import assert_usage_error, assert_valid_history, ok

pytestmark = pytest.mark.kernel

DEFINITIONS = '''
import json, time
import qwen_magic
from typing import Literal

calls = []

@qwen_magic.tool
def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict:
    """Current weather in a city.

    Args:
        city: City name.
        unit: Temperature unit.
    """
    calls.append(["get_weather", city, unit])
    return {"city": city, "temp": 21, "unit": unit}

def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    calls.append(["add", a, b])
    return a + b

def explode(reason: str) -> str:
    calls.append(["explode", reason])
    raise RuntimeError(f"boom: {reason}")

def slow(seconds: float) -> str:
    calls.append(["slow", seconds])
    time.sleep(seconds)
    calls.append(["slow done"])
    return "done"

def launch_missiles() -> str:
    calls.append(["LAUNCHED"])
    return "launched"

not_a_function = 42
'''


@pytest.fixture
def tools(fresh):
    """The shared kernel with the functions above defined (and nothing called yet)."""
    run = fresh.run(DEFINITIONS)
    assert run.status == "ok", run.error_text
    return fresh


def called(kernel) -> list:
    return json.loads(kernel.run("print(json.dumps(calls))").stdout)


def panels(run) -> list[dict]:
    """The final tool-call outputs of a cell."""
    return run.marked("qwen-tool")


def test_a_call_runs_in_the_kernel_and_the_next_answer_streams_into_the_same_cell(tools):
    arguments = {"city": 'Zürich "HB" \\ 東京', "unit": "F"}
    tools.server.queue(
        Stream(text="Let me look.", tool_calls=[ToolCall("get_weather", arguments, id="toolu_w1")], json_chunk=2),
        Stream(text="It is **21 °F** there.", chunk=4),
    )
    run = tools.run("%%qwen --tools get_weather\nWeather?")
    ok(run)
    assert called(tools) == [["get_weather", 'Zürich "HB" \\ 東京', "F"]]
    first, second = tools.server.requests[0], tools.server.requests[1]
    assert len(tools.server.requests) == 2
    definition = first.body["tools"][0]
    assert definition["name"] == "get_weather" and definition["description"] == "Current weather in a city."
    assert definition["input_schema"]["properties"]["city"] == {"type": "string", "description": "City name."}
    assert definition["input_schema"]["required"] == ["city"]
    assert second.body["tools"] == first.body["tools"]
    messages = second.body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": arguments},
        ],
    }
    result = json.dumps({"city": arguments["city"], "temp": 21, "unit": "F"}, ensure_ascii=False, separators=(",", ":"))
    assert messages[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_w1", "content": result}],
    }
    assert_valid_history(messages)
    # The cell: the first answer, its call (collapsible, escaped), the second answer, one footer.
    assert run.markdown == "Let me look.It is **21 °F** there."
    (panel,) = panels(run)
    assert panel["text/html"].startswith('<details class="qwen-tool">')
    assert "&quot;HB&quot;" in panel["text/html"] and '"HB"' not in panel["text/html"]
    assert panel["text/plain"].startswith("🔧 get_weather(city='Zürich \"HB\" \\\\ 東京', unit='F') → {")
    painted = [
        m["content"]["data"]["text/plain"] for m in run.of("display_data") if "qwen-tool" in str(m["content"]["data"])
    ]
    assert painted and "running" in painted[0]  # shown as it started, then repainted with its result
    plain = run.data("text/plain")
    assert plain[-1].startswith("qwen3.6-plus · 1 tool round · ")
    order = [o["data"].get("text/plain", "") for o in run.outputs if "data" in o]
    assert order.index(panel["text/plain"]) < order.index("It is **21 °F** there.")


def test_several_calls_in_one_answer_and_several_rounds_run_in_order(tools):
    tools.server.queue(
        Stream(
            tool_calls=[ToolCall("add", {"a": 1, "b": 2}, id="t1"), ToolCall("get_weather", {"city": "Oslo"}, id="t2")],
            json_chunk=1,
        ),
        Stream(text="Now one more.", tool_calls=[ToolCall("add", {"a": 3, "b": 4}, id="t3")], json_chunk=5),
        Stream(text="Done: 3, 7 and Oslo."),
    )
    run = tools.run("%%qwen --tools add,get_weather\nDo the sums")
    ok(run)
    assert called(tools) == [["add", 1, 2], ["get_weather", "Oslo", "C"], ["add", 3, 4]]
    requests = tools.server.requests
    assert len(requests) == 3
    messages = requests[2].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert [(b["tool_use_id"], b["content"]) for b in messages[2]["content"]] == [
        ("t1", "3"),
        ("t2", '{"city":"Oslo","temp":21,"unit":"C"}'),
    ]
    assert messages[4]["content"] == [{"type": "tool_result", "tool_use_id": "t3", "content": "7"}]
    assert_valid_history(messages)
    assert [p["text/plain"].split(" →")[0] for p in panels(run)] == [
        "🔧 add(a=1, b=2)",
        "🔧 get_weather(city='Oslo')",
        "🔧 add(a=3, b=4)",
    ]
    footer = run.data("text/plain")[-1]
    total_in = sum(r.usage["input_tokens"] for r in requests)
    total_out = sum(r.usage["output_tokens"] for r in requests)
    assert f"2 tool rounds · {total_in:,} in · {total_out:,} out" in footer
    usage = tools.run("%qwen usage").markdown
    assert "| default | 3 |" in usage  # three requests counted


def test_failures_go_back_to_the_model_as_text_and_the_loop_goes_on(tools):
    tools.server.queue(
        Stream(
            tool_calls=[
                ToolCall("launch_missiles", {}, id="f1"),  # defined in the notebook, but not offered
                ToolCall("add", {"a": "one", "b": 2}, id="f2"),
                ToolCall("explode", {"reason": "<b>bad</b>"}, id="f3"),
            ]
        ),
        Stream(text="Sorry about that."),
    )
    run = tools.run("%%qwen --tools add,explode\nTry things")
    ok(run)  # the service accepted every result: none carries is_error
    assert called(tools) == [["explode", "<b>bad</b>"]]  # nothing else ran, least of all launch_missiles
    results = {b["tool_use_id"]: b for b in tools.server.requests[1].body["messages"][2]["content"]}
    assert results["f1"]["content"] == "Error: there is no tool named 'launch_missiles'. Available tools: add, explode."
    assert results["f2"]["content"].startswith(
        "Error: the arguments do not match the schema of add, so it was not called: a:"
    )
    assert results["f3"]["content"] == "Error: explode raised RuntimeError: boom: <b>bad</b>"
    assert all("is_error" not in b for b in results.values())
    shown = panels(run)
    assert all("⚠" in p["text/plain"] for p in shown)
    assert "&lt;b&gt;bad&lt;/b&gt;" in shown[2]["text/html"] and "<b>bad</b>" not in shown[2]["text/html"]
    assert run.markdown == "Sorry about that."


BAD_FIGURE = """
import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
def bad_fig(x: int):  # its title's mathtext fails only when the figure is drawn
    figure, axes = plt.subplots(); axes.set_title(r'$\\frac{1}{$'); plt.close(figure); return figure
"""


def test_a_result_that_cannot_be_sent_is_an_error_result_and_the_loop_goes_on(tools):
    assert tools.run(BAD_FIGURE).status == "ok"
    tools.server.queue(
        Stream(text="Drawing.", tool_calls=[ToolCall("bad_fig", {"x": 1}, id="c1")]), Stream(text="It did not draw.")
    )
    run = tools.run("%%qwen --tools bad_fig\nDraw")
    ok(run)
    result = tools.server.requests[1].body["messages"][2]["content"][0]["content"]
    assert result.startswith("Error: bad_fig ran, but its result could not be sent: ValueError")
    assert "⚠" in panels(run)[0]["text/plain"] and "running" not in panels(run)[0]["text/plain"]
    assert run.markdown.endswith("It did not draw.")  # the loop went on to the next answer


def test_the_round_limit_stops_with_a_clear_message_and_leaves_history_valid(tools):
    tools.run("%qwen config max_tool_rounds=2")
    tools.server.queue(*(Stream(tool_calls=[ToolCall("add", {"a": n, "b": n}, id=f"r{n}")]) for n in (1, 2, 3)))
    run = tools.run("%%qwen --tools add\nKeep adding")
    ok(run)
    assert len(tools.server.requests) == 3
    assert called(tools) == [["add", 1, 1], ["add", 2, 2]]  # the third round's call was not run
    assert "Not run: the limit of 2 tool rounds" in panels(run)[-1]["text/plain"]
    footer = run.data("text/plain")[-1]
    assert "3 tool rounds" in footer and "max_tool_rounds" in footer and "%qwen config max_tool_rounds=N" in footer
    tools.server.queue(Stream(text="Fine."))
    after = tools.run("%%qwen\nThanks")
    ok(after)
    body = tools.server.requests[-1].body
    messages = body["messages"]
    assert_valid_history(messages)
    assert messages[-1]["content"][0]["tool_use_id"] == "r3"
    assert messages[-1]["content"][-1] == {"type": "text", "text": "Thanks"}  # joins the unanswered results
    # History holds tool blocks, so tools are defined, but this cell offers none: the model may not call.
    assert [t["name"] for t in body["tools"]] == ["add"] and body["tool_choice"] == {"type": "none"}
    assert "tool round limit" in tools.run("%qwen history").markdown


def test_an_interrupt_during_a_slow_tool_stops_the_loop_and_the_next_cell_works(tools):
    tools.server.queue(
        Stream(
            text="Waiting.",
            tool_calls=[ToolCall("slow", {"seconds": 30}, id="s1"), ToolCall("add", {"a": 1, "b": 1}, id="s2")],
        )
    )
    started = time.monotonic()
    run = tools.run("%%qwen --tools slow,add\nGo slowly", interrupt_after=2.0)
    assert time.monotonic() - started < 10
    assert run.status == "error"
    assert "Interrupted while slow ran" in run.error_text and "Traceback" not in run.error_text
    assert len(run.error_text) < 600
    assert called(tools) == [["slow", 30]]  # stopped inside the tool; the next call never ran
    assert len(tools.server.requests) == 1
    slow_panel, add_panel = panels(run)
    assert "interrupted this call" in slow_panel["text/plain"] and "Not run" in add_panel["text/plain"]
    assert "interrupted" in run.data("text/plain")[-1]
    tools.server.queue(Stream(text="Back."))
    after = tools.run("%%qwen --tools add\nAre you there?")
    ok(after)
    assert after.markdown == "Back."
    messages = tools.server.requests[-1].body["messages"]
    assert_valid_history(messages)
    assert [(b.get("tool_use_id"), b.get("content", b.get("text"))) for b in messages[-1]["content"]] == [
        ("s1", "Error: the user interrupted this call; it did not finish."),
        ("s2", "Not run: the user interrupted an earlier call."),
        (None, "Are you there?"),
    ]
    history = tools.run("%qwen history").markdown
    assert "slow(seconds=30)" in history and "interrupted" in history


def test_thinking_and_tools_together_show_each_rounds_thinking_and_never_resend_it(tools):
    tools.server.queue(
        Stream(thinking="I should add <these> two.", tool_calls=[ToolCall("add", {"a": 2, "b": 3}, id="k1")]),
        Stream(thinking="Now I can answer.", text="The sum is 5."),
    )
    run = tools.run("%%qwen --thinking --tools add\nAdd 2 and 3")
    ok(run)
    second = tools.server.requests[1].body
    assert second["thinking"]["type"] == "enabled"
    sent = json.dumps(second)
    assert "I should add" not in sent and '"type": "thinking"' not in sent
    thoughts = [
        o["data"]["text/html"] for o in run.outputs if "qwen-thinking" in o.get("data", {}).get("text/html", "")
    ]
    assert len(thoughts) == 2
    assert "I should add &lt;these&gt; two." in thoughts[0] and "Now I can answer." in thoughts[1]
    kinds = []
    for o in run.outputs:
        html = o.get("data", {}).get("text/html", "")
        kinds.append("thinking" if "qwen-thinking" in html else "tool" if "qwen-tool" in html else "other")
    assert kinds.index("tool") < max(i for i, k in enumerate(kinds) if k == "thinking")
    history = tools.run("%qwen history").data("text/plain")[0]
    assert "I should add <these> two." in history and "Now I can answer." in history
    tools.server.queue(Stream(text="ok"))
    tools.run("%%qwen\nThanks")
    assert "I should add" not in json.dumps(tools.server.requests[-1].body)


def test_bare_tools_offers_the_marked_functions_and_bad_names_are_usage_errors(tools):
    tools.server.queue(Stream(text="ok"))
    ok(tools.run("%%qwen --tools\nWhat can you do?"))
    assert [t["name"] for t in tools.server.requests[-1].body["tools"]] == ["get_weather"]
    before = len(tools.server.requests)
    for cell, needle in [("--tools nope", "'nope' is not defined"), ("--tools not_a_function", "not a function")]:
        run = tools.run(f"%%qwen {cell}\nHi")
        assert_usage_error(run, needle)
    assert len(tools.server.requests) == before


def test_tools_line_command_lists_schemas_and_the_setting_shows_in_config(tools):
    listed = tools.run("%qwen tools add,get_weather").markdown
    assert "#### `add`" in listed and "Add two whole numbers." in listed and "```json" in listed
    assert "| `city` | `string` | yes | City name. |" in listed
    marked = tools.run("%qwen tools").markdown
    assert "`get_weather`" in marked and "`add`" not in marked
    assert_usage_error(tools.run("%qwen tools nope"))
    assert "`max_tool_rounds`" in tools.run("%qwen config").markdown


def test_an_image_result_follows_the_tool_results(tools):
    pytest.importorskip("PIL")
    tools.run("from PIL import Image\ndef draw(color: str):\n    return Image.new('RGB', (4, 4), color)")
    tools.server.queue(Stream(tool_calls=[ToolCall("draw", {"color": "red"}, id="i1")]), Stream(text="A red square."))
    run = tools.run("%%qwen --tools draw\nDraw")
    ok(run)
    content = tools.server.requests[1].body["messages"][2]["content"]
    assert [b["type"] for b in content] == ["tool_result", "text", "image"]
    assert content[0]["content"] == "[1 image: sent after the tool results, labelled 'draw']"
    assert content[2]["source"]["media_type"] == "image/png"
    assert '<img src="data:image/png;base64,' in panels(run)[0]["text/html"]


def test_no_stream_and_rerunning_the_cell_replace_the_whole_tool_turn(tools):
    for _ in range(2):
        tools.server.queue(Stream(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Stream(text="3"))
        ok(tools.run("%%qwen --no-stream --tools add\nOne plus two", cell_id="cell-t"))
    assert tools.server.requests[-1].body.get("stream") in (None, False)
    # The rerun replaced the first turn: the last request holds one turn's rounds only.
    assert [m["role"] for m in tools.server.requests[-1].body["messages"]] == ["user", "assistant", "user"]


def test_a_tools_list_may_have_spaces_after_its_commas(tools):
    """``--tools add, explode`` as ``%qwen tools add, explode`` takes it (it was 'unrecognized arguments')."""
    tools.server.queue(Stream(text="Fine."))
    ok(tools.run("%%qwen --tools add, explode\nHi"))
    assert [t["name"] for t in tools.server.requests[-1].body["tools"]] == ["add", "explode"]
