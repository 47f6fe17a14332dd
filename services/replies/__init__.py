"""The AI turn: the service (starting replies, one at a time per session; stop; the reads for resume,
sync and REST), one reply's stream (the provider's side and the coalescing loop), and the leases that
tell a live reply from one whose process died."""

from services.replies.service import ReplyService, StreamEnded
from services.replies.settings import ReplySettings

__all__ = ["ReplyService", "ReplySettings", "StreamEnded"]
