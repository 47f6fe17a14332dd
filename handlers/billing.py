"""REST: /api/v1/subscription/*, /api/v1/billing/*, /api/v1/credits/checkout. (Being filled in.)"""

from __future__ import annotations

from handlers.api import Api

api = Api("billing")
