"""Typed application keys: every shared resource, looked up as `app[KEY]`, no globals."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import asyncpg
import socketio
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.admin import AdminService
from services.ai_tools import AITools
from services.auth import AuthService
from services.billing.checkout import BillingService
from services.billing.config import BillingSettings
from services.billing.webhooks import StripeWebhooks
from services.broadcasts import Broadcasts
from services.chat import ChatService
from services.conversation import ConversationService
from services.credits import CreditService
from services.exports.chat_export import ChatExports
from services.exports.usage_export import UsageExports
from services.files.service import FilesService
from services.jobs import JobService
from services.knowledge import KnowledgeService
from services.knowledge.ingest_job import KnowledgeIngests
from services.metrics import Metrics
from services.notifications import NotificationService
from services.personas import PersonaService
from services.plans import Plans
from services.play_billing import PlayBillingService
from services.quota import QuotaService
from services.replies import ReplyService
from services.subscriptions import SubscriptionService
from services.tokens import TokenSigner
from services.usage import UsageService


@dataclass(frozen=True)
class HttpSettings:
    """What the REST layer reads from configuration (server/app.py makes it from the settings)."""

    json_max_bytes: int
    trusted_proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    ai_timeout_seconds: float
    message_max_chars: int


SETTINGS = web.AppKey("settings", HttpSettings)
DB_DSN = web.AppKey("db_dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)  # absent when REDIS_URL is unset
SIO = web.AppKey("sio", socketio.AsyncServer)
SIGNER = web.AppKey("signer", TokenSigner)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", Metrics)
AUTH_SERVICE = web.AppKey("auth_service", AuthService)
ADMIN_SERVICE = web.AppKey("admin_service", AdminService)
PLANS = web.AppKey("plans", Plans)
PERSONA_SERVICE = web.AppKey("persona_service", PersonaService)
CHAT_SERVICE = web.AppKey("chat_service", ChatService)
CONVERSATION_SERVICE = web.AppKey("conversation_service", ConversationService)
KNOWLEDGE_SERVICE = web.AppKey("knowledge_service", KnowledgeService)
FILES_SERVICE = web.AppKey("files_service", FilesService)
REPLY_SERVICE = web.AppKey("reply_service", ReplyService)
AI_TOOLS = web.AppKey("ai_tools", AITools)
CREDIT_SERVICE = web.AppKey("credit_service", CreditService)
NOTIFICATION_SERVICE = web.AppKey("notification_service", NotificationService)
QUOTA_SERVICE = web.AppKey("quota_service", QuotaService)
USAGE_SERVICE = web.AppKey("usage_service", UsageService)
BILLING_SETTINGS = web.AppKey("billing_settings", BillingSettings)
SUBSCRIPTION_SERVICE = web.AppKey("subscription_service", SubscriptionService)
BILLING_SERVICE = web.AppKey("billing_service", BillingService)
STRIPE_WEBHOOKS = web.AppKey("stripe_webhooks", StripeWebhooks)
PLAY_SERVICE = web.AppKey("play_service", PlayBillingService)
JOB_SERVICE = web.AppKey("job_service", JobService)
CHAT_EXPORTS = web.AppKey("chat_exports", ChatExports)
USAGE_EXPORTS = web.AppKey("usage_exports", UsageExports)
BROADCASTS = web.AppKey("broadcasts", Broadcasts)
KNOWLEDGE_INGESTS = web.AppKey("knowledge_ingests", KnowledgeIngests)
