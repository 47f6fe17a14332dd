"""Typed application keys: every shared resource, looked up as `app[KEY]`, no globals."""

from __future__ import annotations

import asyncpg
import socketio
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from server.config import Settings
from server.metrics import Metrics
from server.tokens import TokenSigner
from services.admin import AdminService
from services.ai_tools import AITools
from services.auth import AuthService
from services.chat import ChatService
from services.credits import CreditService
from services.knowledge import KnowledgeService
from services.personas import PersonaService
from services.plans import Plans
from services.quota import QuotaService
from services.ratelimit import RateLimiter
from services.replies import ReplyService
from services.usage import UsageService

SETTINGS = web.AppKey("settings", Settings)
DB_DSN = web.AppKey("db_dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)  # absent when REDIS_URL is unset
SIO = web.AppKey("sio", socketio.AsyncServer)
SIGNER = web.AppKey("signer", TokenSigner)
LIMITER = web.AppKey("limiter", RateLimiter)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", Metrics)
AUTH_SERVICE = web.AppKey("auth_service", AuthService)
ADMIN_SERVICE = web.AppKey("admin_service", AdminService)
PLANS = web.AppKey("plans", Plans)
PERSONA_SERVICE = web.AppKey("persona_service", PersonaService)
CHAT_SERVICE = web.AppKey("chat_service", ChatService)
KNOWLEDGE_SERVICE = web.AppKey("knowledge_service", KnowledgeService)
REPLY_SERVICE = web.AppKey("reply_service", ReplyService)
AI_TOOLS = web.AppKey("ai_tools", AITools)
CREDIT_SERVICE = web.AppKey("credit_service", CreditService)
QUOTA_SERVICE = web.AppKey("quota_service", QuotaService)
USAGE_SERVICE = web.AppKey("usage_service", UsageService)
