"""Building the prompt for a reply: the persona as the system instruction, the knowledge chunks most
relevant to what the user just said, and the recent conversation with the files its messages carry, all
within a token budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from uuid import UUID

from core.entities import Message, Persona
from providers.ai.base import Attachment, Prompt, Turn

# What one image part costs at least: providers count images by size (Gemini: 258 tokens a tile, OpenAI
# 85 and up); this guard only keeps room for them.
IMAGE_TOKENS = 258
# Less room than this for a file's text: the file is mentioned instead of being cut to a few words.
MIN_TEXT_TOKENS = 32
CUT_NOTE = "cut to fit the context"
LEFT_OUT_NOTE = "too long for the context; not included"


def estimate_tokens(text: str) -> int:
    # ~4 characters per token for English; a budget guard, not a bill (usage comes from the provider).
    return len(text) // 4 + 1


def system_instruction(
    persona: Persona | None, knowledge: Sequence[str], *, budget_tokens: int, opening: str | None = None
) -> str:
    """`opening`: the chat's greeting as the user saw it (its selected variant; "" when deleted); None for a
    chat that has none stored (older chats), whose persona's greeting stands in for it."""
    if persona is None:
        return "You are a helpful, friendly assistant."
    parts = [f"You are {persona.name}. Stay in character and answer as {persona.name} would."]
    if persona.description:
        parts.append(f"About you: {persona.description}")
    if persona.personality:
        parts.append(persona.personality)
    greeting = persona.greeting if opening is None else opening
    if greeting:
        parts.append(f"You opened the conversation with: {greeting}")
    used = sum(estimate_tokens(p) for p in parts)
    facts = []
    for chunk in knowledge:
        cost = estimate_tokens(chunk)
        if used + cost > budget_tokens:
            break
        facts.append(f"- {chunk.strip()}")
        used += cost
    if facts:
        parts.append("Things you know (use them when relevant, never quote this list):\n" + "\n".join(facts))
    return "\n\n".join(parts)


@dataclass
class _Room:
    """Tokens left: for the whole conversation, and for attachments' text within it (at most half, so
    that a long file cannot push the conversation itself out)."""

    total: int
    text: int


def _cut(file: Attachment, tokens: int) -> Attachment:
    """A text attachment within `tokens` (its header included), or a mention when too little is left."""
    if tokens >= estimate_tokens(file.block()):
        return file
    header = len(replace(file, text="", note=CUT_NOTE).block())
    chars = tokens * 4 - header - 8
    if chars < MIN_TEXT_TOKENS * 4:
        return replace(file, text=None, note=LEFT_OUT_NOTE)
    return replace(file, text=(file.text or "")[:chars].rstrip() + " …", note=CUT_NOTE)


def _fit(files: Sequence[Attachment], room: _Room, content_cost: int) -> tuple[tuple[Attachment, ...], int]:
    """A message's attachments with their text cut to the room left, and what they cost in all."""
    fitted: list[Attachment] = []
    cost = 0
    for file in files:
        if file.text is not None:
            file = _cut(file, min(room.text, room.total - content_cost - cost))
            if file.text is not None:
                room.text -= estimate_tokens(file.block())
        cost += estimate_tokens(file.block()) + (IMAGE_TOKENS if file.data is not None else 0)
        fitted.append(file)
    return tuple(fitted), cost


def conversation(
    history: Sequence[Message],
    *,
    budget_tokens: int,
    attachments: Mapping[UUID, Sequence[Attachment]] | None = None,
) -> list[Turn]:
    """Newest messages first until the budget is spent, then back in order. Consecutive messages of one
    role merge into one turn (several user messages answered by one reply), and the conversation
    starts with the user, as chat APIs expect. A message's `attachments` (by message id) count against
    the budget too: their text is cut to what is left, newest messages first."""
    files = attachments or {}
    room = _Room(total=budget_tokens, text=budget_tokens // 2)
    picked: list[tuple[Message, tuple[Attachment, ...]]] = []
    for message in reversed(history):
        if message.status == "deleted" or (
            message.role == "assistant" and (message.status == "failed" or not message.content)
        ):
            continue
        content_cost = estimate_tokens(message.content)
        carried, files_cost = _fit(files.get(message.id, ()), room, content_cost)
        cost = content_cost + files_cost
        if cost > room.total and picked:
            break
        picked.append((message, carried))
        room.total -= cost
    turns: list[Turn] = []
    for message, carried in reversed(picked):
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1].role == role:
            last = turns[-1]
            turns[-1] = Turn(role, f"{last.text}\n\n{message.content}", last.attachments + carried)
        else:
            turns.append(Turn(role, message.content, carried))
    while turns and turns[0].role == "assistant":
        turns.pop(0)
    return turns


def build_prompt(
    persona: Persona | None,
    history: Sequence[Message],
    knowledge: Sequence[str],
    *,
    context_tokens: int,
    max_output_tokens: int,
    user_name: str = "the user",
    attachments: Mapping[UUID, Sequence[Attachment]] | None = None,
) -> Prompt:
    """`attachments`: the files each message carries (by message id), loaded for this prompt."""
    # The chat's stored greeting, selected variant and all (chat APIs want the user first, so it goes here).
    greeting = next((m for m in history if m.kind == "greeting"), None)
    opening = None if greeting is None else ("" if greeting.status == "deleted" else greeting.content)
    system = system_instruction(persona, knowledge, budget_tokens=context_tokens // 3, opening=opening)
    # Character cards (SillyTavern) write {{user}} and {{char}} placeholders into persona text.
    system = system.replace("{{user}}", user_name).replace("{{char}}", persona.name if persona else "you")
    remaining = max(context_tokens - estimate_tokens(system), context_tokens // 4)
    return Prompt(
        system=system,
        turns=conversation(history, budget_tokens=remaining, attachments=attachments),
        max_output_tokens=max_output_tokens,
        persona_name=persona.name if persona else "",
    )
