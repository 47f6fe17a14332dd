"""FcmSender on the real firebase-admin SDK, pointed at the fake FCM server (tests/fakes/fcm.py): what each
FCM answer becomes, and what goes over the wire for Android and iOS."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import firebase_admin
import google.oauth2.credentials
import pytest

import providers.push as push_module
from providers.push import FcmSender, Push, PushConfigError, PushOutcome
from tests.fakes.fcm import ACCESS_TOKEN, FCM_PROJECT, FakeFcm, write_service_account
from tests.helpers import free_port


def reply_push(token: str, *, collapse_key: str | None = None) -> Push:
    return Push(
        token=token,
        title="Ada replied",
        body="Here is the first part of the answer",
        data={"kind": "reply_ready", "session_id": "s-1", "message_id": "m-7"},
        thread_id="s-1",
        collapse_key=collapse_key,
    )


async def test_each_fcm_answer_is_classified(fcm_sender: FcmSender, fake_fcm: FakeFcm) -> None:
    fake_fcm.answer("tok-gone", "unregistered")
    fake_fcm.answer("tok-bad", "invalid_argument")
    fake_fcm.answer("tok-quota", "quota_exceeded", retry_after=30)
    fake_fcm.answer("tok-down", "unavailable")
    tokens = ["tok-good", "tok-gone", "tok-bad", "tok-quota", "tok-down"]

    results = await fcm_sender.send([reply_push(t) for t in tokens])

    assert [r.token for r in results] == tokens
    by_token = {r.token: r for r in results}
    good = by_token["tok-good"]
    assert good.ok and good.outcome is PushOutcome.SENT
    assert good.message_id is not None and good.message_id.startswith(f"projects/{FCM_PROJECT}/messages/")
    assert by_token["tok-gone"].outcome is PushOutcome.UNREGISTERED
    assert by_token["tok-bad"].outcome is PushOutcome.UNREGISTERED
    quota = by_token["tok-quota"]
    assert quota.outcome is PushOutcome.RETRY and quota.retry_after == 30
    down = by_token["tok-down"]
    assert down.outcome is PushOutcome.RETRY and down.retry_after is None
    assert not any(r.ok for r in results[1:])
    assert all(r.error and "tok-" not in r.error for r in results[1:])
    assert len(fake_fcm.messages_for("tok-quota")) == 1


async def test_the_sdk_retries_503_itself_before_it_reports_it(
    fake_fcm: FakeFcm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx turns NO_PROXY entries into mounts of its plain transport, which bypass firebase-admin's
    # retrying one for those hosts: only without NO_PROXY does the loopback fake see what FCM would.
    if any(os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")):
        pytest.skip("a proxy is configured: the fake needs NO_PROXY")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fake_fcm.answer("tok-flaky", "unavailable")
    sender = FcmSender.from_credential(
        google.oauth2.credentials.Credentials(token="t"), FCM_PROJECT, base_url=fake_fcm.url
    )
    try:
        started = time.monotonic()
        [result] = await sender.send([reply_push("tok-flaky")])
    finally:
        await sender.close()
    assert result.outcome is PushOutcome.RETRY
    # Four more attempts, 0 + 1 + 2 + 4 s apart: a 503 costs a batch about 7 s before the job retries.
    assert len(fake_fcm.messages_for("tok-flaky")) == 5
    assert time.monotonic() - started > 6


async def test_the_wire_message_opens_the_chat_on_android_and_ios(fcm_sender: FcmSender, fake_fcm: FakeFcm) -> None:
    [result] = await fcm_sender.send([reply_push("tok-wire", collapse_key="chat-s-1")])
    assert result.ok
    [received] = [r for r in fake_fcm.received if r.token == "tok-wire"]
    assert received.project == FCM_PROJECT
    assert received.authorization == "Bearer test-token"
    assert "validate_only" not in received.body
    message = received.message
    data = {"kind": "reply_ready", "session_id": "s-1", "message_id": "m-7"}
    assert message["token"] == "tok-wire"
    assert message["notification"] == {"title": "Ada replied", "body": "Here is the first part of the answer"}
    assert message["data"] == data
    android = message["android"]
    assert android["priority"] == "high"
    assert android["collapse_key"] == "chat-s-1"
    assert android["notification"]["click_action"] == "OPEN_CHAT"
    assert android["notification"]["channel_id"] == "chat"
    apns = message["apns"]
    assert apns["headers"]["apns-priority"] == "10"
    assert apns["headers"]["apns-push-type"] == "alert"
    assert apns["headers"]["apns-collapse-id"] == "chat-s-1"
    payload = apns["payload"]
    aps = payload["aps"]
    assert aps["alert"] == {"title": "Ada replied", "body": "Here is the first part of the answer"}
    assert aps["sound"] == "default"
    assert aps["mutable-content"] == 1
    assert aps["category"] == "CHAT_REPLY"
    assert aps["thread-id"] == "s-1"
    assert {k: payload[k] for k in data} == data


async def test_a_payload_fault_is_not_a_dead_token(fcm_sender: FcmSender, fake_fcm: FakeFcm) -> None:
    fake_fcm.answer("tok-payload", "invalid_argument", field="message.data[0].key")
    [result] = await fcm_sender.send([reply_push("tok-payload")])
    assert result.outcome is PushOutcome.FAILED


async def test_batches_beyond_the_sdk_limit_are_split(
    fcm_sender: FcmSender, fake_fcm: FakeFcm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # firebase-admin refuses more than 500 messages per call; a smaller limit shows the split quickly.
    monkeypatch.setattr(push_module, "_BATCH_LIMIT", 2)
    fake_fcm.answer("tok-many-3", "unregistered")
    tokens = [f"tok-many-{i}" for i in range(5)]
    results = await fcm_sender.send([reply_push(t) for t in tokens])
    assert [r.outcome for r in results] == [PushOutcome.SENT] * 3 + [PushOutcome.UNREGISTERED, PushOutcome.SENT]
    fake_fcm.answer("tok-many-3", "ok")
    results = await fcm_sender.send([reply_push(t) for t in tokens])
    assert [r.token for r in results] == tokens and all(r.ok for r in results)
    assert await fcm_sender.send([]) == []


def test_push_rejects_non_string_data() -> None:
    with pytest.raises(ValueError):
        Push(token="t", title="x", body="y", data={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        Push(token="", title="x", body="y")


def test_no_credentials_means_no_sender() -> None:
    assert FcmSender.from_settings(None, FCM_PROJECT) is None
    with pytest.raises(PushConfigError):
        FcmSender.from_settings(Path("/nonexistent/firebase.json"), FCM_PROJECT)


def test_a_project_id_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(PushConfigError):
        FcmSender.from_credential(google.oauth2.credentials.Credentials(token="t"), "")


async def test_service_account_fetches_its_token_off_the_loop(tmp_path: Path, fake_fcm: FakeFcm) -> None:
    path = write_service_account(tmp_path / "firebase.json", fake_fcm.token_uri(), FCM_PROJECT)
    sender = FcmSender.from_settings(path, base_url=fake_fcm.url)
    assert sender is not None
    grants = fake_fcm.token_grants
    fake_fcm.token_delay = 0.5
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        results = await sender.send([reply_push("tok-sa-1"), reply_push("tok-sa-2")])
        assert all(r.ok for r in results), results
        ticker.cancel()
        # The loop kept running while the token was fetched (half a second).
        assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.25
        # One grant for the batch, reused by the next send.
        await sender.send([reply_push("tok-sa-3")])
        assert fake_fcm.token_grants == grants + 1
        [received] = [r for r in fake_fcm.received if r.token == "tok-sa-3"]
        assert received.project == FCM_PROJECT
        assert received.authorization == f"Bearer {ACCESS_TOKEN}"
    finally:
        fake_fcm.token_delay = 0.0
        ticker.cancel()
        await sender.close()


async def test_own_firebase_apps_do_not_collide(fake_fcm: FakeFcm) -> None:
    credential = google.oauth2.credentials.Credentials(token="t")
    one = FcmSender.from_credential(credential, FCM_PROJECT, base_url=fake_fcm.url)
    two = FcmSender.from_credential(credential, "other-project", base_url=fake_fcm.url)
    try:
        await two.send([reply_push("tok-other")])
        [received] = [r for r in fake_fcm.received if r.token == "tok-other"]
        assert received.project == "other-project"
    finally:
        await one.close()
        await two.close()
    # The class attribute (the real FCM URL for every other App) is untouched.
    assert "fcm.googleapis.com" in firebase_admin.messaging._MessagingService.FCM_URL


async def test_an_unreachable_fcm_is_retried_later() -> None:
    credential = google.oauth2.credentials.Credentials(token="t")
    sender = FcmSender.from_credential(credential, FCM_PROJECT, base_url=f"http://127.0.0.1:{free_port()}")
    try:
        [result] = await sender.send([reply_push("tok-nowhere")])
    finally:
        await sender.close()
    assert result.outcome is PushOutcome.RETRY and result.retry_after is None
