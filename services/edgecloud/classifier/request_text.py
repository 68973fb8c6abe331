"""The text of an OpenAI request that the classifier reads.

Chat: the **last user message** only. The service type is what the user asks for now ("now translate
that into French" after a coding discussion is a translation); earlier turns are context, and the
system or developer message is the application's standing instruction, which is the same for every
request of an app and would pull every request towards one type. One message also bounds the cost.
The price: a bare follow-up ("and the second one?") is classified on its own words, usually as chat.
A request with no user message (system-only prompts) falls back to the last message that has text.
Only ``text`` content parts are read; images, audio and files carry no text to classify.

Completions: the prompt; a list of prompts (a batch) is joined with newlines, as the gateway treats
the request as one task. Token-id prompts have no text: they come back as ``""`` and are classified
as the empty prompt (chat, with low confidence; see ``model.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgecloud.core.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest

USER_ROLE = "user"
TEXT_PART_TYPE = "text"
# Text parts of one message are joined with a newline, so words of adjacent parts are not glued together.
PART_SEPARATOR = "\n"
PROMPT_SEPARATOR = "\n"

Message = ChatMessage | Mapping[str, Any]


def prompt_text(source: ChatCompletionRequest | CompletionRequest | Sequence[Message] | str | Sequence[Any]) -> str:
    """The text to classify: a chat request's or message list's last user message, or a completion prompt."""
    if isinstance(source, ChatCompletionRequest):
        return _messages_text(source.messages)
    if isinstance(source, CompletionRequest):
        return _completion_text(source.prompt)
    if isinstance(source, str):
        return source
    if any(isinstance(item, ChatMessage | Mapping) for item in source):
        return _messages_text(source)
    return _completion_text(source)


def _messages_text(messages: Sequence[Any]) -> str:
    parsed = [_role_and_text(message) for message in messages]
    for role, text in reversed(parsed):
        if role == USER_ROLE:
            return text
    return next((text for _, text in reversed(parsed) if text.strip()), "")


def _role_and_text(message: Any) -> tuple[str, str]:
    if isinstance(message, ChatMessage):
        return message.role, _content_text(message.content)
    if isinstance(message, Mapping):
        return str(message.get("role", "")), _content_text(message.get("content"))
    return "", ""


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = (
            part.get("text")
            for part in content
            if isinstance(part, Mapping) and part.get("type", TEXT_PART_TYPE) == TEXT_PART_TYPE
        )
        return PART_SEPARATOR.join(part for part in parts if isinstance(part, str))
    return ""


def _completion_text(prompt: str | Sequence[Any]) -> str:
    if isinstance(prompt, str):
        return prompt
    if prompt and all(isinstance(item, str) for item in prompt):
        return PROMPT_SEPARATOR.join(prompt)
    return ""  # token ids: no text
