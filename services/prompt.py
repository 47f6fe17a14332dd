"""Building the prompt for a reply: the persona as the system instruction, the knowledge chunks most
relevant to what the user just said, and the recent conversation, all within a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from core.entities import Message, Persona
from providers.ai.base import Prompt, Turn


def estimate_tokens(text: str) -> int:
    # ~4 characters per token for English; a budget guard, not a bill (usage comes from the provider).
    return len(text) // 4 + 1


def system_instruction(persona: Persona | None, knowledge: Sequence[str], *, budget_tokens: int) -> str:
    if persona is None:
        return "You are a helpful, friendly assistant."
    parts = [f"You are {persona.name}. Stay in character and answer as {persona.name} would."]
    if persona.description:
        parts.append(f"About you: {persona.description}")
    if persona.personality:
        parts.append(persona.personality)
    if persona.greeting:
        parts.append(f"You opened the conversation with: {persona.greeting}")
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


def conversation(history: Sequence[Message], *, budget_tokens: int) -> list[Turn]:
    """Newest messages first until the budget is spent, then back in order. Consecutive messages of one
    role merge into one turn (several user messages answered by one reply), and the conversation
    starts with the user, as chat APIs expect."""
    picked: list[Message] = []
    used = 0
    for message in reversed(history):
        if message.role == "assistant" and (message.status == "failed" or not message.content):
            continue
        cost = estimate_tokens(message.content)
        if used + cost > budget_tokens and picked:
            break
        picked.append(message)
        used += cost
    turns: list[Turn] = []
    for message in reversed(picked):
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, f"{turns[-1].text}\n\n{message.content}")
        else:
            turns.append(Turn(role, message.content))
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
) -> Prompt:
    system = system_instruction(persona, knowledge, budget_tokens=context_tokens // 3)
    # Character cards (SillyTavern) write {{user}} and {{char}} placeholders into persona text.
    system = system.replace("{{user}}", user_name).replace("{{char}}", persona.name if persona else "you")
    remaining = max(context_tokens - estimate_tokens(system), context_tokens // 4)
    return Prompt(
        system=system,
        turns=conversation(history, budget_tokens=remaining),
        max_output_tokens=max_output_tokens,
        persona_name=persona.name if persona else "",
    )
