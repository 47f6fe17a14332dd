-- Plans, quotas, credits and billing.

-- The balance lives on the user row so spending is one conditional UPDATE (never below zero, even under
-- concurrency); the ledger is the append-only record that always sums to it.
ALTER TABLE users ADD COLUMN credit_balance bigint NOT NULL DEFAULT 0 CHECK (credit_balance >= 0);
ALTER TABLE users ADD COLUMN stripe_customer_id text UNIQUE;

CREATE TABLE credit_ledger (
    id               bigserial PRIMARY KEY,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    delta            bigint NOT NULL CHECK (delta <> 0),
    balance_after    bigint NOT NULL CHECK (balance_after >= 0),
    reason           text NOT NULL,           -- message, refund, purchase, admin_grant, marketplace, ...
    idempotency_key  text NOT NULL,
    ref_type         text,
    ref_id           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX credit_ledger_user_idx ON credit_ledger (user_id, id DESC);

-- AI messages per user per local day (the user's time zone decides the day).
CREATE TABLE usage_daily (
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day            date NOT NULL,
    messages       integer NOT NULL DEFAULT 0,  -- counted against the daily quota
    credit_messages integer NOT NULL DEFAULT 0, -- paid with a credit
    refunded       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

-- What each user message spent, so a failed reply can give exactly that back, once.
CREATE TABLE message_charges (
    message_id   uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('quota', 'credit', 'unlimited')),
    day          date NOT NULL,
    refunded_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_charges_user_idx ON message_charges (user_id, created_at);

-- Subscriptions from any store. The user's plan is derived from them (see SubscriptionStore).
CREATE TABLE subscriptions (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id               uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider              text NOT NULL CHECK (provider IN ('stripe', 'google_play', 'admin')),
    external_id           text NOT NULL,
    plan                  text NOT NULL,
    period                text NOT NULL CHECK (period IN ('daily', 'monthly', 'yearly', 'lifetime')),
    status                text NOT NULL CHECK (status IN ('active', 'past_due', 'in_grace', 'canceled', 'expired')),
    current_period_end    timestamptz,
    grace_until           timestamptz,
    cancel_at_period_end  boolean NOT NULL DEFAULT false,
    -- Provider time of the last state applied: an older event never overwrites a newer state.
    state_at              timestamptz NOT NULL DEFAULT 'epoch',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, external_id)
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id);

-- Webhook / notification events already applied (exactly once, whatever the retries).
CREATE TABLE billing_events (
    provider     text NOT NULL,
    event_id     text NOT NULL,
    type         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE invoices (
    id            text PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount_cents  bigint NOT NULL,
    currency      text NOT NULL,
    status        text NOT NULL,
    hosted_url    text,
    period_end    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_user_idx ON invoices (user_id, created_at DESC);

-- Scheduled jobs: every process schedules every job; each run claims its slot here, one wins.
CREATE TABLE job_runs (
    job          text NOT NULL,
    slot         text NOT NULL,
    node         text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    result       jsonb,
    PRIMARY KEY (job, slot)
);
