"""Scripted answers for ``--schema``/``--json`` cells: values that fit the answer tool's schema.

``value_reply(body)`` answers a request that offers the answer tool: a tool call whose
input is a plausible, deterministic value built from the tool's ``input_schema`` (after a
``tool_result``, a short closing text). ``value_text`` is the same value as JSON text, for
scripting answers that come in prose.
"""

from __future__ import annotations

import json
from typing import Any

from fake_dashscope import Stream, ToolCall

ANSWER_DESCRIPTION = "Give the final answer"
CITIES = ["Paris", "Lima", "Oslo", "Nairobi", "Osaka", "Quito"]
COUNTRIES = ["France", "Peru", "Norway", "Kenya", "Japan", "Ecuador"]
NUMBERS = {"population": [2_102_650, 9_751_717, 709_037, 4_397_073, 2_752_412, 2_800_388]}


def answer_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The answer tool ``%%qwen --schema`` offers, if this request offers it."""
    for tool in body.get("tools") or []:
        if str(tool.get("description", "")).startswith(ANSWER_DESCRIPTION):
            return tool
    return None


def value_reply(body: dict[str, Any], *, chunk: int = 7) -> Stream | None:
    """A call of the answer tool with a value fitting its schema; None when it is not offered."""
    tool = answer_tool(body)
    if tool is None or (body.get("tool_choice") or {}).get("type") == "none":
        return None
    last = body["messages"][-1]["content"]
    answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    others = [t for t in body["tools"] if t is not tool]
    if others and not answered:  # --tools with --schema: the tools first
        from responders import sample_arguments

        calls = [ToolCall(t["name"], sample_arguments(t.get("input_schema", {}))) for t in others]
        return Stream(text="Let me look that up.", tool_calls=calls)
    return Stream(tool_calls=[ToolCall(tool["name"], sample(tool["input_schema"]))], json_chunk=chunk)


def value_text(value: Any) -> str:
    """A value as compact JSON, the way a model writes it."""
    return json.dumps(value, ensure_ascii=False)


def sample(schema: dict[str, Any], name: str = "", index: int = 0) -> Any:
    """A deterministic value that validates against ``schema`` (the subset pydantic emits)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][index % len(schema["enum"])]
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"] or schema["anyOf"]
        return sample(options[0], name, index)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        if properties:
            return {key: sample(sub, key, index) for key, sub in properties.items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {CITIES[i].lower(): sample(extra, name, i) for i in range(3)}
        return {"city": CITIES[index % len(CITIES)], "country": COUNTRIES[index % len(COUNTRIES)]}
    if kind == "array":
        if "prefixItems" in schema:
            return [sample(sub, name, i) for i, sub in enumerate(schema["prefixItems"])]
        count = max(schema.get("minItems", 0), 3)
        return [sample(schema.get("items", {}), name, i) for i in range(count)]
    if kind == "string":
        lowered = name.lower()
        if "country" in lowered:
            return COUNTRIES[index % len(COUNTRIES)]
        if schema.get("format") == "date":
            return f"2024-0{index % 9 + 1}-15"
        return CITIES[index % len(CITIES)]
    if kind == "integer":
        series = NUMBERS.get(name.lower())
        return series[index % len(series)] if series else 10 + index
    if kind == "number":
        return round(12.5 + 3.25 * index, 2)
    if kind == "boolean":
        return index % 2 == 0
    if kind == "null":
        return None
    return {"city": CITIES[index % len(CITIES)], "rank": index + 1}  # any JSON value
