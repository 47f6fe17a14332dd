"""REST: /api/v1/personas."""

from __future__ import annotations

from handlers.api import Api

api = Api("personas")
