"""Character Cards, the persona format of the SillyTavern ecosystem: read V1, V2 and V3 cards from JSON or
from a PNG's text chunks, map them to Parlor's persona fields and back, and write V2/V3 JSON and PNGs.

- V1: a flat `{name, description, personality, scenario, first_mes, mes_example}`.
- V2: `{"spec": "chara_card_v2", "spec_version": "2.0", "data": {... V1 fields, creator_notes, system_prompt,
  post_history_instructions, alternate_greetings, tags, creator, character_version, character_book,
  extensions}}`.
- V3: `{"spec": "chara_card_v3", "spec_version": "3.0", "data": {... V2 fields, assets, nickname,
  creation_date, modification_date, ...}}`.
- In a PNG the card's JSON is base64 in a text chunk keyworded `chara` (V1/V2) or `ccv3` (V3); `ccv3` wins
  when both are there. tEXt, zTXt and iTXt chunks are read; the image itself is never decoded, so a
  decompression bomb costs nothing.

Pure: no database and no HTTP. Malformed input raises `CardError`, which says what is wrong and whether
the file is not a card format at all (`unsupported`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core import limits

if TYPE_CHECKING:
    from PIL.Image import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
V2 = "chara_card_v2"
V3 = "chara_card_v3"
V1 = "chara_card_v1"
# Keywords of the text chunks that may hold a card, the preferred first.
CARD_KEYWORDS = ("ccv3", "chara")

# The persona and knowledge APIs' limits: an imported card is clipped to fit them.
NAME_MAX = limits.PERSONA_NAME_MAX
DESCRIPTION_MAX = limits.PERSONA_DESCRIPTION_MAX
PERSONALITY_MAX = limits.PERSONA_PERSONALITY_MAX
GREETING_MAX = limits.PERSONA_GREETING_MAX
ALTERNATE_GREETINGS_MAX = limits.PERSONA_ALTERNATE_GREETINGS_MAX
TAG_MAX = limits.TAG_MAX
TAGS_MAX = limits.TAGS_MAX
TITLE_MAX = limits.KNOWLEDGE_TITLE_MAX
ENTRY_MAX = limits.KNOWLEDGE_TEXT_MAX
BOOK_ENTRIES_MAX = 500

# Sections of Parlor's personality made from a card's fields, in order. Only `personality` set: it is
# taken as it is, so a card Parlor exported (which fills only `personality`) comes back unchanged.
_SECTIONS = (
    ("personality", "Personality"),
    ("scenario", "Scenario"),
    ("system_prompt", "Instructions"),
    ("post_history_instructions", "Instructions"),
    ("mes_example", "Example dialogue"),
)
_CHAR_MACRO = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)
_ORIGINAL_MACRO = re.compile(r"\{\{original\}\}", re.IGNORECASE)


class CardError(ValueError):
    """Not a usable card. `field` names where the problem is (`file`, or a path inside the card's JSON);
    `unsupported` means the file is neither PNG nor JSON."""

    def __init__(self, message: str, *, field: str = "file", unsupported: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.unsupported = unsupported


@dataclass(frozen=True)
class BookEntry:
    """One character book (lorebook) entry: what the persona knows about `keys`."""

    title: str
    keys: tuple[str, ...]
    content: str


@dataclass(frozen=True)
class Card:
    spec: str
    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    creator_notes: str = ""
    creator: str = ""
    character_version: str = ""
    tags: tuple[str, ...] = ()
    alternate_greetings: tuple[str, ...] = ()
    book_name: str = ""
    # Enabled entries with content only; disabled ones are dropped when the card is read.
    book: tuple[BookEntry, ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PersonaFields:
    """A card mapped to Parlor: the persona's fields, the knowledge entries, and the fields that had to be
    clipped to fit Parlor's limits."""

    name: str
    description: str
    personality: str
    greeting: str
    alternate_greetings: list[str]
    tags: list[str]
    knowledge: list[BookEntry]
    truncated: list[str]


# --- reading ----------------------------------------------------------------------------------------


def read_card(data: bytes, *, max_text_bytes: int) -> Card:
    """The card in a PNG (text chunk `ccv3` or `chara`) or a JSON file. `max_text_bytes` bounds what a
    compressed text chunk may inflate to."""
    if data.startswith(PNG_SIGNATURE):
        return _card_from_png(data, max_text_bytes=max_text_bytes)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return card_from_json(_json_object(data, what="the file"))
    raise CardError("not a Character Card: upload a PNG with an embedded card, or a card's JSON", unsupported=True)


def card_from_json(value: Any) -> Card:
    """A card from its parsed JSON: V2 and V3 (`spec` + `data`) or a flat V1 object."""
    if not isinstance(value, dict):
        raise CardError("the card must be a JSON object")
    spec = value.get("spec")
    data = value.get("data")
    if isinstance(data, dict) and (spec in (V2, V3) or spec is None):
        return _card(data, spec=spec if spec in (V2, V3) else V2, prefix="data.")
    if spec in (V2, V3):
        if "name" in value:  # some tools also write the V1 fields at the top: use those
            return _card(value, spec=V1, prefix="")
        raise CardError(f"a {spec} card needs a `data` object", field="data")
    if spec is not None:
        raise CardError(f"unknown card spec {str(spec)[:40]!r} (known: {V2}, {V3})", field="spec")
    return _card(value, spec=V1, prefix="")


def png_text_chunks(data: bytes, keywords: Sequence[str], *, max_text_bytes: int) -> dict[str, str]:
    """The text of the tEXt/zTXt/iTXt chunks whose keyword (case-insensitively) is one of `keywords`, the
    first of each. Reads chunk headers only: pixels are never decompressed."""
    if not data.startswith(PNG_SIGNATURE):
        raise CardError("not a PNG file", unsupported=True)
    wanted = {k.lower() for k in keywords}
    found: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):
            if found:
                break  # the card came before the damage; use it
            raise CardError("the PNG is truncated or corrupt")
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword, _, rest = data[start:end].partition(b"\x00")
            name = keyword.decode("latin-1").lower()
            if name in wanted and name not in found:
                found[name] = _chunk_text(kind, rest, max_text_bytes=max_text_bytes)
        elif kind == b"IEND":
            break
        pos = end + 4  # and the CRC
    return found


def _chunk_text(kind: bytes, body: bytes, *, max_text_bytes: int) -> str:
    try:
        if kind == b"tEXt":
            return body.decode("latin-1")
        if kind == b"zTXt":  # compression method (0), then zlib data
            return _inflate(body[1:], max_text_bytes).decode("latin-1")
        # iTXt: compression flag, method, language tag \0, translated keyword \0, UTF-8 text
        compressed = body[0] == 1
        _language, _, rest = body[2:].partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        return (_inflate(text, max_text_bytes) if compressed else text).decode("utf-8")
    except (IndexError, UnicodeDecodeError, zlib.error) as err:
        raise CardError("the PNG's card text chunk is corrupt") from err


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise CardError(f"the PNG's compressed card text is larger than {limit} bytes")
    return out


def _card_from_png(data: bytes, *, max_text_bytes: int) -> Card:
    texts = png_text_chunks(data, CARD_KEYWORDS, max_text_bytes=max_text_bytes)
    if not texts:
        raise CardError("the PNG carries no character card (no `chara` or `ccv3` text chunk)")
    first_error: CardError | None = None
    for keyword in CARD_KEYWORDS:
        if keyword in texts:
            try:
                return card_from_json(_payload(texts[keyword], keyword))
            except CardError as err:  # a broken ccv3 next to a good chara: use the chara
                first_error = first_error or err
    assert first_error is not None
    raise first_error


def _payload(text: str, keyword: str) -> Any:
    """A text chunk's card: base64 of the JSON (what every tool writes), or the JSON itself."""
    text = text.strip()
    if text.startswith("{"):
        return _json_object(text.encode("utf-8"), what=f"the `{keyword}` chunk")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise CardError(f"the PNG's `{keyword}` chunk is not valid base64") from err
    return _json_object(raw, what=f"the PNG's `{keyword}` chunk")


def _json_object(raw: bytes, *, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CardError(f"{what} is not valid UTF-8 JSON") from err


def _card(data: dict[str, Any], *, spec: str, prefix: str) -> Card:
    name = _text(data.get("name")).strip()
    if not name:
        raise CardError("the card has no name", field=f"{prefix}name")
    book = data.get("character_book")
    return Card(
        spec=spec,
        name=name,
        description=_text(data.get("description")),
        personality=_text(data.get("personality")),
        scenario=_text(data.get("scenario")),
        first_mes=_text(data.get("first_mes")),
        mes_example=_text(data.get("mes_example")),
        system_prompt=_text(data.get("system_prompt")),
        post_history_instructions=_text(data.get("post_history_instructions")),
        creator_notes=_text(data.get("creator_notes")),
        creator=_text(data.get("creator")),
        character_version=_text(data.get("character_version")),
        tags=_strings(data.get("tags")),
        alternate_greetings=_texts(data.get("alternate_greetings")),
        book_name=_text(book.get("name")) if isinstance(book, dict) else "",
        book=_book(book),
        extensions=data["extensions"] if isinstance(data.get("extensions"), dict) else {},
    )


def _clean(text: str) -> str:
    """PostgreSQL text holds no NUL and no lone surrogate (which JSON's \\ud800 escapes can make)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _text(value: Any) -> str:
    """Cards from the wild carry nulls and numbers where text belongs: take scalars as text, drop the rest."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def _strings(value: Any) -> tuple[str, ...]:
    """Words such as tags or keys: a lone string is a comma-separated list."""
    return _texts(value.split(",") if isinstance(value, str) else value)


def _texts(value: Any) -> tuple[str, ...]:
    """Whole texts such as alternate greetings, trimmed, blanks dropped: a lone string is one text (a greeting
    has commas of its own)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(s for s in (_text(v).strip() for v in value) if s)


def _book(value: Any) -> tuple[BookEntry, ...]:
    if not isinstance(value, dict) or not isinstance(value.get("entries"), list | dict):
        return ()
    raw = value["entries"]
    items = list(raw.values()) if isinstance(raw, dict) else raw  # SillyTavern world files key them by uid
    entries = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("enabled") is False or item.get("disable") is True:
            continue
        content = _text(item.get("content")).strip()
        if not content:
            continue
        keys = _strings(item.get("keys") if "keys" in item else item.get("key"))
        title = _text(item.get("name")).strip() or _text(item.get("comment")).strip() or ", ".join(keys)
        entries.append(BookEntry(title=title, keys=keys, content=content))
    return tuple(entries)


# --- mapping ----------------------------------------------------------------------------------------


def persona_fields(card: Card) -> PersonaFields:
    """Card → Parlor. description → description; first_mes → greeting; alternate_greetings → alternate
    greetings (the first 20 non-blank, each clipped like the greeting); tags normalized (lowercase, at most
    20 of at most 32 characters); personality alone → personality as it is, else personality, scenario,
    system prompt, post-history instructions and example dialogue as labelled sections; `{{char}}` becomes
    the name (`{{user}}` is left for the prompt builder). Each enabled character book entry → a knowledge
    entry. What exceeds Parlor's limits is clipped and listed in `truncated`."""
    truncated: list[str] = []

    def fit(name: str, text: str, limit: int) -> str:
        clipped = _clip(text, limit)
        if clipped != text and name not in truncated:
            truncated.append(name)
        return clipped

    name = fit("name", card.name, NAME_MAX)

    def macros(text: str) -> str:
        return _ORIGINAL_MACRO.sub("", _CHAR_MACRO.sub(lambda _: name, text)).strip()

    extra = [macros(getattr(card, attr)) for attr, _ in _SECTIONS[1:]]
    if not any(extra):
        personality = macros(card.personality)
    else:
        sections: dict[str, list[str]] = {}
        for attr, label in _SECTIONS:
            text = macros(getattr(card, attr))
            if text:
                sections.setdefault(label, []).append(text)
        personality = "\n\n".join(f"{label}:\n" + "\n\n".join(texts) for label, texts in sections.items())

    alternates = [text for text in (macros(g) for g in card.alternate_greetings) if text]
    if len(alternates) > ALTERNATE_GREETINGS_MAX:
        truncated.append("alternate_greetings")
    alternates = [fit("alternate_greetings", g, GREETING_MAX) for g in alternates[:ALTERNATE_GREETINGS_MAX]]

    tags, tags_clipped = _tags(card.tags)
    if tags_clipped:
        truncated.append("tags")

    knowledge = []
    for index, entry in enumerate(card.book[:BOOK_ENTRIES_MAX], 1):
        knowledge.append(
            BookEntry(
                title=fit("character_book", macros(entry.title) or f"Entry {index}", TITLE_MAX),
                keys=entry.keys,
                content=fit("character_book", macros(entry.content), ENTRY_MAX),
            )
        )
    if len(card.book) > BOOK_ENTRIES_MAX and "character_book" not in truncated:
        truncated.append("character_book")

    return PersonaFields(
        name=name,
        description=fit("description", macros(card.description), DESCRIPTION_MAX),
        personality=fit("personality", personality, PERSONALITY_MAX),
        greeting=fit("greeting", macros(card.first_mes), GREETING_MAX),
        alternate_greetings=alternates,
        tags=tags,
        knowledge=[k for k in knowledge if k.content],
        truncated=truncated,
    )


def _tags(raw: Sequence[str]) -> tuple[list[str], bool]:
    """Lowercased, without blanks or repeats, at most TAGS_MAX of at most TAG_MAX characters; and whether
    any were dropped for their length or their number."""
    tags: dict[str, None] = {}
    clipped = False
    for tag in raw:
        cleaned = tag.strip().lower()
        if len(cleaned) > TAG_MAX:
            clipped = True
        elif cleaned:
            tags.setdefault(cleaned, None)
    return list(tags)[:TAGS_MAX], clipped or len(tags) > TAGS_MAX


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary when one is near, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.9:
        cut = cut[:space]
    return cut.rstrip() + "…"


def card_for_persona(
    *,
    name: str,
    description: str,
    personality: str,
    greeting: str,
    alternate_greetings: Sequence[str],
    tags: Sequence[str],
    book: Sequence[BookEntry],
    extensions: dict[str, Any] | None = None,
) -> Card:
    """Parlor → card: the inverse of `persona_fields` (personality goes whole into `personality`, scenario
    and system prompt stay empty), so exporting and importing again gives the same persona."""
    return Card(
        spec=V2,
        name=name,
        description=description,
        personality=personality,
        first_mes=greeting,
        alternate_greetings=tuple(alternate_greetings),
        tags=tuple(tags),
        book_name=f"{name} knowledge" if book else "",
        book=tuple(book),
        extensions=dict(extensions or {}),
    )


# --- writing ----------------------------------------------------------------------------------------


def _book_json(card: Card, *, v3: bool) -> dict[str, Any]:
    entries = []
    for index, entry in enumerate(card.book):
        item: dict[str, Any] = {
            "keys": list(entry.keys),
            "content": entry.content,
            "extensions": {},
            "enabled": True,
            "insertion_order": index,
            "case_sensitive": False,
            "name": entry.title,
            "priority": 10,
            "id": index,
            "comment": entry.title,
            "selective": False,
            "secondary_keys": [],
            "constant": False,
            "position": "before_char",
        }
        if v3:
            item["use_regex"] = False
        entries.append(item)
    return {"name": card.book_name, "entries": entries, "extensions": {}}


def to_v2(card: Card) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": card.name,
        "description": card.description,
        "personality": card.personality,
        "scenario": card.scenario,
        "first_mes": card.first_mes,
        "mes_example": card.mes_example,
        "creator_notes": card.creator_notes,
        "system_prompt": card.system_prompt,
        "post_history_instructions": card.post_history_instructions,
        "alternate_greetings": list(card.alternate_greetings),
        "tags": list(card.tags),
        "creator": card.creator,
        "character_version": card.character_version,
        "extensions": dict(card.extensions),
    }
    if card.book:
        data["character_book"] = _book_json(card, v3=False)
    return {"spec": V2, "spec_version": "2.0", "data": data}


def to_v3(card: Card, *, created: datetime, modified: datetime) -> dict[str, Any]:
    data = to_v2(card)["data"]
    if card.book:
        data["character_book"] = _book_json(card, v3=True)
    data.update(
        {
            "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
            "nickname": "",
            "creator_notes_multilingual": {},
            "source": [],
            "group_only_greetings": [],
            "creation_date": int(created.timestamp()),
            "modification_date": int(modified.timestamp()),
        }
    )
    return {"spec": V3, "spec_version": "3.0", "data": data}


def _encoded(card_json: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(card_json, ensure_ascii=False).encode("utf-8")).decode("ascii")


def card_png(card: Card, *, seed: bytes, created: datetime, modified: datetime, picture: bytes | None = None) -> bytes:
    """The persona's picture (`picture`: a stored avatar, any format the uploads take; its first frame
    when animated) as a PNG, or without one a 400x600 placeholder portrait (a colour from `seed`, the
    name's initial), carrying the card as V2 in a `chara` tEXt chunk and as V3 in a `ccv3` one. CPU work:
    run it off the event loop."""
    from PIL import PngImagePlugin

    image = _picture(picture) if picture is not None else None
    if image is None:
        image = _placeholder(card.name, seed)
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", _encoded(to_v2(card)))
    info.add_text("ccv3", _encoded(to_v3(card, created=created, modified=modified)))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


# Pixel modes a PNG stores as they are; other modes (CMYK, YCbCr, ...) are converted to RGB(A).
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})


def _picture(data: bytes) -> Image | None:
    """A stored avatar decoded for re-encoding as PNG, or None when it cannot be read (the placeholder is
    drawn instead). Avatars were processed on upload (at most IMAGE_MAX_SIDE px), so decoding is bounded."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        image: Image = PILImage.open(io.BytesIO(data))
        image.seek(0)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError):
        return None
    if image.mode not in _PNG_MODES:
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    return image


def _placeholder(name: str, seed: bytes) -> Image:
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    digest = hashlib.sha256(seed).digest()
    # Muted colours: each channel between 60 and 187, so white text always reads.
    color = tuple(60 + b % 128 for b in digest[:3])
    image = PILImage.new("RGB", (400, 600), color)  # type: ignore[arg-type]
    initial = name[:1].upper()
    if initial.isascii() and initial.isalnum():
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=220)
        draw.text((200, 300), initial, fill=(255, 255, 255), font=font, anchor="mm")
    return image
