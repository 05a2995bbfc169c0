"""Issue 13 without a kernel: the 404 suggestion, the file checks, float settings, odd tool calls."""

from __future__ import annotations

import re

import anthropic
import httpx2
import pytest

from qwen_magic._client import translate
from qwen_magic._magic import KNOWN_MODELS


def not_found(model: str) -> anthropic.NotFoundError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
    body = {"type": "error", "error": {"type": "not_found_error", "message": f"The model `{model}` does not exist."}}
    return anthropic.NotFoundError("404", response=httpx2.Response(404, request=request), body=body)


@pytest.mark.parametrize("model", [*KNOWN_MODELS, "QWEN3.6-PLUS", " qwen3.6-plus", "qwen3.6-plsu", "gpt-4", "x"])
def test_the_404_message_suggests_a_listed_model_that_differs(model):
    text = str(translate(not_found(model), model=model, base_url="http://h"))
    suggested = set(re.findall(r"model=(\S+?)`", text)) | set(re.findall(r"`-m (\S+?)`", text))
    assert len(suggested) == 1, text
    (other,) = suggested
    assert other in KNOWN_MODELS and other.lower() != model.strip().lower(), text


def test_a_misspelt_model_gets_the_closest_listed_one():
    text = str(translate(not_found("qwen3.6-plsu"), model="qwen3.6-plsu", base_url="http://h"))
    assert "model=qwen3.6-plus`" in text
