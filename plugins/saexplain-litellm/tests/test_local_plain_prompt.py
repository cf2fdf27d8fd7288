"""A model without a chat template (a base model such as Gemma 3 270M) gets a plain transcript,
which starts with the BOS its tokenizer adds to plain text: prompts are tokenized without special
tokens, and Gemma without its BOS answers "<h2><h2>..."."""

from __future__ import annotations

from typing import Any

from saexplain_litellm.local import LocalEngine

from saexplain.models import ChatRequest, Message


class Tokenizer:
    def __init__(self, adds_bos: bool) -> None:
        self.bos_token, self.bos_token_id, self.adds_bos = "<bos>", 2, adds_bos

    def __call__(self, text: str) -> dict[str, Any]:
        return {"input_ids": ([2] if self.adds_bos else []) + [7] * len(text)}


def rendered(adds_bos: bool, prefill: str | None = None) -> str:
    engine = LocalEngine("unused")
    engine.tokenizer = Tokenizer(adds_bos)  # no chat_template: the plain transcript
    request = ChatRequest(
        messages=[Message(role="system", content="Be brief."), Message(role="user", content="Hi")],
        prefill=prefill,
    )
    return engine.render(request)


def test_a_base_model_prompt_starts_with_the_bos_its_tokenizer_adds():
    assert rendered(adds_bos=True) == "<bos>system: Be brief.\nuser: Hi\nassistant:"
    assert rendered(adds_bos=True, prefill="Answer:").endswith("assistant: Answer:")


def test_no_bos_is_added_when_the_tokenizer_adds_none():
    assert rendered(adds_bos=False) == "system: Be brief.\nuser: Hi\nassistant:"
