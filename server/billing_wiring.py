"""Wiring of billing (Stripe, Google Play), subscriptions, retention and the scheduler: one cleanup
context, appended after the core services in create_app. The keys the handlers read are in
handlers/keys.py; the ones only the server uses live here, beside it.

Tests (or an embedding program) may set `app[BILLING_SETTINGS]` before the app starts; otherwise the
settings come from the environment (services.billing.config.BillingSettings)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from handlers.keys import (
    BILLING_SERVICE,
    BILLING_SETTINGS,
    CREDIT_SERVICE,
    FILES_SERVICE,
    JOB_SERVICE,
    NOTIFICATION_SERVICE,
    PLANS,
    PLAY_SERVICE,
    POOL,
    SIO,
    STRIPE_WEBHOOKS,
    SUBSCRIPTION_SERVICE,
)
from providers.google_play import AccessToken, GooglePlay, ServiceAccountToken, StaticToken
from providers.stripe_billing import StripeBilling
from realtime.emitter import SocketEvents
from scheduler.jobs import build_jobs
from scheduler.runner import Scheduler
from server.config import Settings
from server.keys import CONFIG
from services.billing.base import StripeDeps
from services.billing.checkout import BillingService
from services.billing.config import BillingSettings
from services.billing.webhooks import StripeWebhooks
from services.play_billing import PlayBillingService
from services.retention import RetentionService
from services.schedule import ScheduledRuns
from services.subscriptions import SubscriptionService

log = structlog.get_logger("parlor")

RETENTION_SERVICE = web.AppKey("retention_service", RetentionService)
SCHEDULED_RUNS = web.AppKey("scheduled_runs", ScheduledRuns)
SCHEDULER = web.AppKey("scheduler", Scheduler)


def _stripe(settings: Settings) -> StripeBilling | None:
    if settings.stripe_secret_key is None or not settings.stripe_secret_key.get_secret_value():
        log.info("stripe billing disabled: STRIPE_SECRET_KEY unset")
        return None
    webhook = settings.stripe_webhook_secret.get_secret_value() if settings.stripe_webhook_secret else None
    if not webhook:
        log.warning("STRIPE_WEBHOOK_SECRET unset: Stripe webhooks are refused, subscriptions will not sync")
    return StripeBilling(
        settings.stripe_secret_key.get_secret_value(), webhook_secret=webhook, api_base=settings.stripe_api_base
    )


def _play(settings: Settings, billing: BillingSettings) -> GooglePlay | None:
    if not billing.play_package_name or not billing.play_products:
        log.info("google play billing disabled: PLAY_PACKAGE_NAME or PLAY_PRODUCTS unset")
        return None
    token: AccessToken
    credentials = billing.play_credentials or settings.firebase_credentials
    if billing.play_access_token is not None:
        token = StaticToken(billing.play_access_token.get_secret_value())
    elif credentials is not None:
        try:
            token = ServiceAccountToken.from_file(credentials)
        except (OSError, ValueError) as err:
            log.error("google play billing disabled: unreadable service account", error=type(err).__name__)
            return None
    else:
        log.info("google play billing disabled: no PLAY_CREDENTIALS or FIREBASE_CREDENTIALS")
        return None
    return GooglePlay(
        package_name=billing.play_package_name,
        token=token,
        api_base=billing.play_api_base,
        timeout_seconds=billing.play_timeout_seconds,
    )


async def billing_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONFIG]
    billing = app.get(BILLING_SETTINGS) or settings.billing()
    app[BILLING_SETTINGS] = billing
    events = SocketEvents(app[SIO])
    stripe = _stripe(settings)
    play = _play(settings, billing)
    notifications = app[NOTIFICATION_SERVICE]
    subscriptions = SubscriptionService(
        pool=app[POOL], events=events, credits=app[CREDIT_SERVICE], settings=billing, notifications=notifications
    )
    app[SUBSCRIPTION_SERVICE] = subscriptions
    deps = StripeDeps(pool=app[POOL], settings=billing, stripe=stripe, subscriptions=subscriptions)
    app[BILLING_SERVICE] = BillingService(deps, plans=app[PLANS])
    app[STRIPE_WEBHOOKS] = StripeWebhooks(deps, credits=app[CREDIT_SERVICE], notifications=notifications)
    app[PLAY_SERVICE] = PlayBillingService(pool=app[POOL], settings=billing, play=play, subscriptions=subscriptions)
    subscriptions.on_due("google_play", app[PLAY_SERVICE].refresh)
    app[RETENTION_SERVICE] = RetentionService(pool=app[POOL], plans=app[PLANS], settings=billing)
    node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    app[SCHEDULED_RUNS] = ScheduledRuns(pool=app[POOL], node=node)
    scheduler = Scheduler(
        build_jobs(
            settings=billing,
            subscriptions=subscriptions,
            retention=app[RETENTION_SERVICE],
            files=app[FILES_SERVICE],
            jobs=app[JOB_SERVICE],
        ),
        app[SCHEDULED_RUNS],
    )
    app[SCHEDULER] = scheduler
    if billing.scheduler_enabled:
        scheduler.start()
    else:
        log.info("scheduler disabled: SCHEDULER_ENABLED=false (jobs run only when triggered)")
    yield
    await scheduler.aclose(grace_seconds=settings.shutdown_timeout_seconds)
    if stripe is not None:
        await stripe.aclose()
    if play is not None:
        await play.aclose()
