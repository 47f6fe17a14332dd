"""Wiring of background jobs and push: the JobService and its kinds, the push sender (FCM, when
FIREBASE_CREDENTIALS is set), and the queue's worker in this process (JOBS_CONCURRENCY of them; none with 0).
One cleanup context, after the core services and before billing (whose scheduler expires job results)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from handlers.keys import (
    ADMIN_SERVICE,
    BROADCASTS,
    CHAT_EXPORTS,
    DB_DSN,
    FILES_SERVICE,
    JOB_SERVICE,
    KNOWLEDGE_INGESTS,
    KNOWLEDGE_SERVICE,
    NOTIFICATION_SERVICE,
    POOL,
    SIO,
    USAGE_EXPORTS,
    USAGE_SERVICE,
)
from jobs.queue import Worker, WorkerSettings, build_queue
from providers.push import FcmSender, PushConfigError
from realtime.emitter import SocketEvents
from server.config import Settings
from server.keys import CONFIG
from services.broadcasts import Broadcasts
from services.exports.chat_export import ChatExports
from services.exports.usage_export import UsageExports
from services.jobs import JobService, JobSettings
from services.knowledge.ingest_job import KnowledgeIngests
from services.push_delivery import PushDelivery

log = structlog.get_logger("parlor")
WORKER = web.AppKey("job_worker", Worker)


def push_sender(settings: Settings) -> FcmSender | None:
    """FCM through firebase-admin, or None (push off, said once) without FIREBASE_CREDENTIALS."""
    if settings.firebase_credentials is None:
        log.info("push notifications disabled: FIREBASE_CREDENTIALS unset (in-app notifications still work)")
        return None
    try:
        return FcmSender.from_settings(
            settings.firebase_credentials, settings.firebase_project_id, base_url=settings.fcm_base_url
        )
    except PushConfigError as err:
        log.error("push notifications disabled: the FCM sender cannot be built", error=str(err))
        return None


def job_settings(settings: Settings) -> JobSettings:
    return JobSettings(
        max_in_flight=settings.jobs_max_in_flight,
        result_ttl_seconds=settings.job_result_ttl_hours * 3600,
        public_base_url=settings.public_base_url,
    )


async def jobs_context(app: web.Application, *, concurrency: int | None = None) -> AsyncIterator[None]:
    settings = app[CONFIG]
    notifications = app[NOTIFICATION_SERVICE]
    jobs = JobService(
        pool=app[POOL],
        events=SocketEvents(app[SIO]),
        files=app[FILES_SERVICE],
        notifications=notifications,
        settings=job_settings(settings),
    )
    app[JOB_SERVICE] = jobs
    app[CHAT_EXPORTS] = ChatExports(pool=app[POOL], jobs=jobs)
    app[USAGE_EXPORTS] = UsageExports(usage=app[USAGE_SERVICE], jobs=jobs)
    app[BROADCASTS] = Broadcasts(pool=app[POOL], jobs=jobs, notifications=notifications, admin=app[ADMIN_SERVICE])
    app[KNOWLEDGE_INGESTS] = KnowledgeIngests(knowledge=app[KNOWLEDGE_SERVICE], jobs=jobs)
    for kind in (
        app[CHAT_EXPORTS].kind(),
        app[USAGE_EXPORTS].kind(),
        app[BROADCASTS].kind(),
        app[KNOWLEDGE_INGESTS].kind(),
    ):
        jobs.register(kind)
    sender = push_sender(settings)
    push = None
    if sender is not None:
        push = PushDelivery(pool=app[POOL], sender=sender, queue=jobs, max_attempts=settings.push_max_attempts)
        notifications.use_push(jobs)
    workers = settings.jobs_concurrency if concurrency is None else concurrency
    worker = Worker(
        build_queue(app[DB_DSN], jobs=jobs, push=push, pool_size=workers + 2),
        WorkerSettings(
            concurrency=workers,
            poll_seconds=settings.jobs_poll_seconds,
            shutdown_seconds=settings.shutdown_timeout_seconds,
        ),
    )
    app[WORKER] = worker
    if workers > 0:
        await worker.open()
        worker.start()
    else:
        log.info("no job worker in this process: JOBS_CONCURRENCY=0 (run `python -m server worker`)")
    yield
    await worker.aclose()
    if sender is not None:
        await sender.close()
