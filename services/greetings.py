"""A persona's greetings as a new chat shows them (SPEC §13): `{{user}}` and `{{char}}` filled in, the main
greeting first and its alternates after it, as the greeting message's variants.

The placeholders are SillyTavern's, so Character Cards read the same here as there: `{{user}}` and
`{{char}}` in any case (`{{User}}`, `{{CHAR}}`), and the legacy `<USER>`, `<BOT>` and `<CHAR>`. Pure: no
database, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence

# One pass over the text, so a name that itself reads `{{char}}` is inserted as it is, never filled again.
_PLACEHOLDER = re.compile(r"\{\{(user|char)\}\}|<(user|bot|char)>", re.IGNORECASE)


def fill_placeholders(text: str, *, user: str, char: str) -> str:
    """`text` with the user's name for `{{user}}` / `<USER>` and the persona's for `{{char}}` / `<BOT>` /
    `<CHAR>`, case-insensitively. Other macros (`{{random}}`, `{{time}}`, ...) are left as they are."""

    def name(match: re.Match[str]) -> str:
        which = (match[1] or match[2]).lower()
        return user if which == "user" else char

    return _PLACEHOLDER.sub(name, text)


def greeting_variants(persona_greeting: str, alternates: Sequence[str], *, user: str, char: str) -> list[str]:
    """The greeting message's variants, filled: the main greeting, then each non-blank alternate in order.
    [] when the main greeting is blank: a persona without a greeting opens no chat with one, whatever its
    alternates (the alternates are the greeting's other variants, not greetings of their own)."""
    if not persona_greeting.strip():
        return []
    return [fill_placeholders(text, user=user, char=char) for text in (persona_greeting, *alternates) if text.strip()]
