"""Field limits, written once: REST bodies and socket payloads validate against these, the OpenAPI and
AsyncAPI documents show them, and Character Card import clips what it brings in to fit them."""

from __future__ import annotations

# Personas
PERSONA_NAME_MAX = 80
PERSONA_DESCRIPTION_MAX = 2000
PERSONA_PERSONALITY_MAX = 8000
PERSONA_GREETING_MAX = 2000
# A persona's other opening messages (Character Cards' alternate_greetings), each as long as a greeting
PERSONA_ALTERNATE_GREETINGS_MAX = 20
TAG_MAX = 32
TAGS_MAX = 20

# Knowledge: an entry's title and text (a text entry, a file's extracted text, a character book entry)
KNOWLEDGE_TITLE_MAX = 200
KNOWLEDGE_TEXT_MAX = 200_000

# Chat. A message's bound here only stops absurd bodies early; the service refuses more than
# MESSAGE_MAX_CHARS (a setting), and the documents say that number.
MESSAGE_BODY_MAX = 200_000
ATTACHMENTS_MAX = 4  # files on one message
SESSION_TITLE_MAX = 120

# Accounts
EMAIL_MAX = 254  # RFC 5321's path limit
DISPLAY_NAME_MAX = 80
PASSWORD_MIN = 8
PASSWORD_MAX = 256

# Lists
CURSOR_MAX = 512
