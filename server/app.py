"""Composition root: `create_app(settings)` wires every resource, in one order, opened and closed by
cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from handlers import admin as admin_handlers
from handlers import ai as ai_handlers
from handlers import auth as auth_handlers
from handlers import billing as billing_handlers
from handlers import chat as chat_handlers
from handlers import docs as docs_handlers
from handlers import files as files_handlers
from handlers import health as health_handlers
from handlers import jobs as job_handlers
from handlers import knowledge as knowledge_handlers
from handlers import middlewares
from handlers import notifications as notification_handlers
from handlers import personas as persona_handlers
from handlers import usage as usage_handlers
from handlers import web as web_handlers
from handlers.api import register_apis
from handlers.keys import (
    ADMIN_SERVICE,
    AI_TOOLS,
    AUTH_SERVICE,
    CHAT_SERVICE,
    CONVERSATION_SERVICE,
    CREDIT_SERVICE,
    DB_DSN,
    FILES_SERVICE,
    KNOWLEDGE_SERVICE,
    METRICS,
    NOTIFICATION_SERVICE,
    PERSONA_SERVICE,
    PLANS,
    POOL,
    QUOTA_SERVICE,
    REDIS,
    REGISTRY,
    REPLY_SERVICE,
    SETTINGS,
    SIGNER,
    SIO,
    USAGE_SERVICE,
    HttpSettings,
)
from providers.firebase_auth import FirebaseAdminVerifier
from realtime import ai_events, chat_events, conversation_events
from realtime import connection as socket_connection
from realtime.acks import EventRegistry
from realtime.emitter import SocketEvents
from realtime.guard import SocketUsers
from realtime.server import create_sio
from server.billing_wiring import billing_context
from server.config import Settings
from server.embedded import load_or_create_secret, start_embedded_postgres
from server.files_wiring import files_context
from server.jobs_wiring import jobs_context
from server.keys import CONFIG, LIMITER, SECRET
from server.providers import create_provider
from services.admin import AdminService
from services.ai_tools import AITools
from services.auth import AuthService
from services.chat import ChatService
from services.conversation import ConversationService
from services.credits import CreditService
from services.knowledge import KnowledgeService
from services.metrics import Metrics
from services.notifications import NotificationService
from services.personas import PersonaService
from services.plans import PlanLimits, Plans
from services.quota import QuotaService
from services.replies import ReplyService, ReplySettings
from services.revoked_sessions import RevokedSessions
from services.tokens import TokenSigner
from services.usage import UsageService
from storage.control_bus import ControlBus
from storage.db import create_pool, migrate
from storage.presence import Presence
from storage.ratelimit import RateLimiter
from storage.stream_buffer import FallbackStreamBuffer, MemoryStreamBuffer, RedisStreamBuffer, StreamBuffer

log = structlog.get_logger("parlor")
HANDLER_MODULES = (
    health_handlers,
    docs_handlers,
    auth_handlers,
    admin_handlers,
    persona_handlers,
    knowledge_handlers,
    chat_handlers,
    files_handlers,
    ai_handlers,
    billing_handlers,
    usage_handlers,
    notification_handlers,
    job_handlers,
    web_handlers,
)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONFIG]
    embedded = None
    dsn = settings.database_url
    if dsn is None:
        dsn, embedded = await start_embedded_postgres(settings.data_dir)
    applied = await migrate(dsn)
    if applied:
        log.info("database migrated", versions=applied)
    app[DB_DSN] = dsn
    app[POOL] = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    yield
    await app[POOL].close()
    del embedded  # pgserver stops the embedded server when its last user exits


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONFIG]
    if not settings.redis_url:
        log.info("REDIS_URL unset: single node, in-process fan-out")
        yield
        return
    # A connect to Redis that hangs (dropped SYN, stalled server) must not hold a socket's connect
    # handler for the OS's retry schedule: give up after 2 s and fall back (presence, rate limits).
    client = Redis.from_url(
        settings.redis_url, health_check_interval=30, socket_keepalive=True, socket_connect_timeout=2
    )
    app[REDIS] = client
    try:
        await client.ping()
    except Exception as err:  # noqa: BLE001 - start anyway; /readyz reports it
        log.warning("redis unreachable at start; serving single-node until it returns", error=str(err))
    yield
    await client.aclose()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONFIG]
    events = SocketEvents(app[SIO])
    firebase = FirebaseAdminVerifier.from_settings(settings.firebase_credentials, settings.firebase_project_id)
    if firebase is None:
        log.info("firebase sign-in disabled: FIREBASE_CREDENTIALS unset")
    revoked_sessions = RevokedSessions(
        pool=app[POOL],
        redis=app.get(REDIS),
        prefix=settings.redis_prefix,
        access_ttl_seconds=settings.access_token_ttl_seconds,
    )
    await revoked_sessions.load()
    app[AUTH_SERVICE] = AuthService(
        pool=app[POOL],
        signer=app[SIGNER],
        limiter=app[LIMITER],
        revoked=revoked_sessions,
        events=events,
        firebase=firebase,
        admin_emails=settings.admin_email_set,
        login_rate_per_minute=settings.login_rate_per_minute,
        login_account_rate_per_hour=settings.login_account_rate_per_hour,
        register_rate_per_hour=settings.register_rate_per_hour,
        refresh_ttl=timedelta(days=settings.refresh_token_ttl_days),
        refresh_reuse_grace=timedelta(seconds=settings.refresh_reuse_grace_seconds),
        argon2_time_cost=settings.argon2_time_cost,
        argon2_memory_kib=settings.argon2_memory_kib,
        files=app[FILES_SERVICE],
    )
    app[ADMIN_SERVICE] = AdminService(pool=app[POOL], events=events)
    # Live sockets per user on every node: the socket layer keeps it; notifications and replies read it.
    presence = Presence(app.get(REDIS), prefix=settings.redis_prefix)
    # push=None: push off until the job queue (which runs PushDelivery with FcmSender.from_settings) is wired.
    app[NOTIFICATION_SERVICE] = NotificationService(pool=app[POOL], events=events, presence=presence, push=None)
    app[CREDIT_SERVICE] = CreditService(pool=app[POOL], events=events, notifications=app[NOTIFICATION_SERVICE])
    app[USAGE_SERVICE] = UsageService(pool=app[POOL])
    app[QUOTA_SERVICE] = QuotaService(plans=app[PLANS], credits=app[CREDIT_SERVICE], events=events, pool=app[POOL])
    app[PERSONA_SERVICE] = PersonaService(pool=app[POOL], plans=app[PLANS], events=events, files=app[FILES_SERVICE])
    app[KNOWLEDGE_SERVICE] = KnowledgeService(
        pool=app[POOL],
        personas=app[PERSONA_SERVICE],
        files=app[FILES_SERVICE],
        upload_max_bytes=settings.upload_max_bytes,
    )
    app[CHAT_SERVICE] = ChatService(
        pool=app[POOL],
        events=events,
        limiter=app[LIMITER],
        send_rate_per_minute=settings.send_rate_per_minute,
        message_max_chars=settings.message_max_chars,
        quota=app[QUOTA_SERVICE],
        files=app[FILES_SERVICE],
    )
    redis = app.get(REDIS)
    provider = create_provider(settings)
    memory_buffer = MemoryStreamBuffer(retention_seconds=settings.ai_stream_retention_seconds)
    buffer: StreamBuffer = memory_buffer
    if redis is not None:
        buffer = FallbackStreamBuffer(
            RedisStreamBuffer(
                redis, prefix=settings.redis_prefix, retention_seconds=settings.ai_stream_retention_seconds
            ),
            memory_buffer,
        )
    bus = ControlBus(redis, prefix=settings.redis_prefix)
    app[REPLY_SERVICE] = ReplyService(
        pool=app[POOL],
        provider=provider,
        buffer=buffer,
        events=events,
        bus=bus,
        knowledge=app[KNOWLEDGE_SERVICE],
        quota=app[QUOTA_SERVICE],
        files=app[FILES_SERVICE],
        settings=ReplySettings(
            first_token_timeout=settings.ai_first_token_timeout_seconds,
            idle_timeout=settings.ai_idle_timeout_seconds,
            max_attempts=settings.ai_max_attempts,
            coalesce_seconds=settings.ai_coalesce_ms / 1000,
            context_tokens=settings.ai_context_tokens,
            max_output_tokens=settings.ai_max_output_tokens,
            knowledge_chunks=settings.ai_knowledge_chunks,
            lease_seconds=settings.ai_lease_seconds,
        ),
        notifications=app[NOTIFICATION_SERVICE],
        presence=presence,
    )
    app[CHAT_SERVICE].on_user_message(app[REPLY_SERVICE].on_user_message)
    app[AI_TOOLS] = AITools(provider, timeout_seconds=settings.ai_timeout_seconds)
    await bus.start()
    app[REPLY_SERVICE].start()
    sio = app[SIO]
    users = SocketUsers(sio, app[AUTH_SERVICE])
    socket_connection.register(
        sio, auth_service=app[AUTH_SERVICE], users=users, presence=presence, metrics=app[METRICS]
    )
    registry = EventRegistry(sio, users, app[METRICS])
    app[CONVERSATION_SERVICE] = ConversationService(
        pool=app[POOL],
        events=events,
        chat=app[CHAT_SERVICE],
        replies=app[REPLY_SERVICE],
        message_max_chars=settings.message_max_chars,
    )
    chat_events.register(
        sio,
        registry,
        chat=app[CHAT_SERVICE],
        replies=app[REPLY_SERVICE],
        conversation=app[CONVERSATION_SERVICE],
        users=users,
    )
    conversation_events.register(registry, conversation=app[CONVERSATION_SERVICE], replies=app[REPLY_SERVICE])
    ai_events.register(sio, registry, replies=app[REPLY_SERVICE], users=users)
    log.info("parlor ready", ai_provider=provider.name)
    yield
    await app[REPLY_SERVICE].shutdown(grace_seconds=settings.shutdown_timeout_seconds)
    await bus.aclose()
    await buffer.aclose()
    await provider.aclose()
    if firebase is not None:
        firebase.close()


async def _sockets_shutdown(app: web.Application) -> None:
    # Runs before cleanup: tell every socket we are going so clients reconnect elsewhere at once.
    sio = app[SIO]
    rooms = sio.manager.rooms.get("/", {})
    sids = list(rooms.get(None, {}))
    for sid in sids:
        await sio.disconnect(sid)
    if sids:
        log.info("closed sockets for shutdown", count=len(sids))


def create_app(settings: Settings) -> web.Application:
    client_max = max(settings.upload_max_bytes, settings.json_max_bytes) + 64 * 1024
    app = web.Application(
        client_max_size=client_max,
        middlewares=[middlewares.request_context, middlewares.errors, middlewares.authentication],
    )
    app[CONFIG] = settings
    app[SETTINGS] = HttpSettings(
        json_max_bytes=settings.json_max_bytes,
        trusted_proxy_networks=settings.trusted_proxy_networks,
        ai_timeout_seconds=settings.ai_timeout_seconds,
        message_max_chars=settings.message_max_chars,
    )
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    app[SECRET] = secret or load_or_create_secret(settings.data_dir)
    app[SIGNER] = TokenSigner(app[SECRET], ttl_seconds=settings.access_token_ttl_seconds)
    app[PLANS] = Plans(
        free=PlanLimits(
            settings.free_daily_messages,
            settings.free_max_personas,
            settings.free_history_days,
            settings.free_storage_mb,
        ),
        premium=PlanLimits(
            settings.premium_daily_messages,
            settings.premium_max_personas,
            settings.premium_history_days,
            settings.premium_storage_mb,
        ),
    )
    app[LIMITER] = RateLimiter(settings.redis_url, prefix=settings.redis_prefix)
    app[REGISTRY] = CollectorRegistry()
    app[METRICS] = Metrics.create(app[REGISTRY])
    sio = create_sio(
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
        cors_origins=settings.cors_origins,
        library_transport=settings.library_transport,
    )
    app[SIO] = sio
    sio.attach(app, socketio_path="socket.io")

    register_apis(app, [module.api for module in HANDLER_MODULES], json_max_bytes=settings.json_max_bytes)
    docs_handlers.add_static(app)
    web_handlers.add_static(app)

    # Order matters: database, then Redis, then the files service (blob store, image workers), the
    # services built on them, the job queue's worker (which runs their methods), then billing and the
    # scheduler (which use the services). Shutdown runs them in reverse.
    app.cleanup_ctx.extend([_database, _redis, files_context, _services, jobs_context, billing_context])
    app.on_shutdown.append(_sockets_shutdown)
    return app
