"""What a service call can fail with besides an AppError: its database being out of reach. REST answers it
as 503 `unavailable`, socket events as the same ack error; storage decides which exceptions mean it."""

from __future__ import annotations

from storage.db import CONNECTION_ERRORS

DATABASE_DOWN: tuple[type[BaseException], ...] = CONNECTION_ERRORS
