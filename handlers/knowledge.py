"""REST: /api/v1/personas/{id}/knowledge, /personas/import, /personas/{id}/export. (Being filled in.)"""

from __future__ import annotations

from handlers.api import Api

api = Api("knowledge")
