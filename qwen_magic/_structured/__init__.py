"""Answers as Python objects: ``%%qwen -o NAME --schema TYPE`` and ``--json``.

One job: turn a model answer into a validated Python value for ``NAME``.

- **The type.** ``TYPE`` is parsed with ``ast`` and resolved against the notebook's
  namespace (then builtins, then ``typing``): names, ``.attributes`` and ``[subscripts]``
  only (plus constants inside ``Literal[...]``, ``X | Y`` and ``tuple[X, ...]``), never a
  call, so ``--schema "make()"`` runs nothing. ``DataFrame[Row]`` (bare ``DataFrame``: rows of any
  fields) asks for a list of ``Row`` records and stores a pandas DataFrame.
- **The schema.** pydantic's ``TypeAdapter(TYPE).json_schema()``, made self-contained
  (``$defs`` inlined, as for tools), wrapped as ``{"value": …}`` when it is not an object:
  a tool's input must be an object.
- **How it is asked.** One tool, ``answer``, whose input is that schema, and a line at the
  end of the prompt asking to call it. ``tool_choice`` forces the call (``any`` when the
  cell also offers ``--tools``, so they run first); if the service refuses forcing (a 400
  naming ``tool_choice``, before anything arrived) the request is sent again with ``auto``,
  and forcing is not tried again for that model (with or without thinking) in this session.
  With ``--tools``, a prose ending after the tools ran is asked once for the value, not
  counted as a repair.
- **JSON in text.** A model that answers in text is taken at its word by one rule: the
  whole text if it is JSON, else the *last* fenced block tagged ``json`` or untagged that
  holds valid JSON (and, for a string type, a one-line answer as the string).
- **Validation and repair.** pydantic in lax mode (``"3"`` fits an ``int``). A value that
  does not validate, or no value, goes back to the model with the errors (as the tool
  result, or as a user message after a text answer) at most ``max_repairs`` times; then
  ``InvalidValue`` fails the cell quoting the first errors, and ``NAME`` is not assigned
  (any other failure, a service error or an interrupt, says so too).
- **In the cell.** The tool input streams as a growing ```json block (``ValueView``
  re-indents it as it comes); the value is then shown compactly (a table for records and
  DataFrames, else its repr) with a note: ``Stored a list[City] of 12 items in cities``.
"""

from __future__ import annotations

from ._ask import AnswerTool, Forcing, ValueLoop, check, from_text, instruction, json_in_text, obtain, tool_name_for
from ._show import JsonIndenter, ValueView, deliver, describe_value, rendering
from ._target import Target, parse_target

__all__ = [
    "AnswerTool",
    "Forcing",
    "JsonIndenter",
    "Target",
    "ValueLoop",
    "ValueView",
    "check",
    "deliver",
    "describe_value",
    "from_text",
    "instruction",
    "json_in_text",
    "obtain",
    "parse_target",
    "rendering",
    "tool_name_for",
]
