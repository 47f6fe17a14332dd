"""Choose the AI provider from configuration (SPEC Appendix B)."""

from __future__ import annotations

import structlog

from providers.ai.base import AIProvider
from providers.ai.demo import DemoProvider
from server.config import Settings

log = structlog.get_logger(__name__)


def create_provider(settings: Settings) -> AIProvider:
    name = settings.resolved_ai_provider
    if name == "gemini":
        if settings.gemini_api_key is None:
            raise RuntimeError("AI_PROVIDER=gemini needs GEMINI_API_KEY")
        from providers.ai.gemini import GeminiProvider

        log.info("ai provider: gemini", model=settings.gemini_model)
        return GeminiProvider(
            api_key=settings.gemini_api_key.get_secret_value(),
            model=settings.gemini_model,
            base_url=settings.gemini_base_url,
            timeout_seconds=settings.ai_timeout_seconds,
        )
    if name == "openai":
        if not settings.openai_base_url and settings.openai_api_key is None:
            raise RuntimeError("AI_PROVIDER=openai needs OPENAI_BASE_URL (or OPENAI_API_KEY for OpenAI itself)")
        from providers.ai.openai_compat import OpenAICompatProvider

        log.info("ai provider: openai-compatible", base_url=settings.openai_base_url, model=settings.openai_model)
        return OpenAICompatProvider(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            model=settings.openai_model or "gpt-4o-mini",
            timeout_seconds=settings.ai_timeout_seconds,
        )
    log.warning("ai provider: DEMO - replies are canned and labelled [demo]; set GEMINI_API_KEY for real ones")
    return DemoProvider(token_delay_seconds=settings.demo_token_delay_ms / 1000)
