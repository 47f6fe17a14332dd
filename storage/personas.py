"""PersonaStore: the `personas` and `persona_activity` tables. (Being filled in: see services/personas.py.)"""

from __future__ import annotations
