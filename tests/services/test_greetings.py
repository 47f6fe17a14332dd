"""services.greetings: the placeholders filled as SillyTavern fills them, and a persona's greetings as the
variants of a new chat's first message. Pure functions: no database."""

from __future__ import annotations

import pytest

from services.greetings import fill_placeholders, greeting_variants


@pytest.mark.parametrize(
    "text, filled",
    [
        ("Hello, {{user}}. I am {{char}}.", "Hello, Ann. I am Nemo."),
        ("{{User}}, {{USER}}, {{uSeR}}; {{Char}}, {{CHAR}}", "Ann, Ann, Ann; Nemo, Nemo"),
        ("<USER> meets <BOT>, also called <CHAR>", "Ann meets Nemo, also called Nemo"),
        ("<user> and <bot>", "Ann and Nemo"),
        ("{{user}}{{char}}{{user}}", "AnnNemoAnn"),
        ("No placeholder here.", "No placeholder here."),
        ("", ""),
        # Other macros, near misses and single braces are not ours to touch.
        (
            "{{random:a,b}} {{time}} {{ user }} {user} {{user} <USERS> {{char}}s",
            "{{random:a,b}} {{time}} {{ user }} {user} {{user} <USERS> Nemos",
        ),
    ],
)
def test_fill_placeholders(text: str, filled: str) -> None:
    assert fill_placeholders(text, user="Ann", char="Nemo") == filled


def test_names_are_inserted_as_they_are() -> None:
    # One pass: a name that reads like a placeholder (or a regex replacement) is not filled again.
    assert fill_placeholders("{{user}} / {{char}}", user="{{char}}", char=r"\1 <USER>") == r"{{char}} / \1 <USER>"
    assert fill_placeholders("Hi {{user}}", user="", char="Nemo") == "Hi "


def test_greeting_variants_main_first_then_non_blank_alternates() -> None:
    variants = greeting_variants(
        "Welcome aboard, {{user}}.",
        ["{{char}} nods at <USER>.", "", "   ", "Back again?"],
        user="Ann",
        char="Nemo",
    )
    assert variants == ["Welcome aboard, Ann.", "Nemo nods at Ann.", "Back again?"]
    assert greeting_variants("Hi.", [], user="Ann", char="Nemo") == ["Hi."]
    assert greeting_variants("Hi.", ("Hey.",), user="Ann", char="Nemo") == ["Hi.", "Hey."]


@pytest.mark.parametrize("greeting", ["", "  \n "])
def test_no_greeting_no_variants(greeting: str) -> None:
    # The alternates are the greeting's other variants: without a greeting there is no greeting message.
    assert greeting_variants(greeting, ["An alternate."], user="Ann", char="Nemo") == []
