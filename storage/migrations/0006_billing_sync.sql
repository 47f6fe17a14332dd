-- Billing details needed by the webhooks, Google Play and the scheduler (docs/billing.md).

-- Two more subscription states, neither of which grants the plan: `incomplete` (the first payment
-- has not gone through yet: Stripe `incomplete`, Play `PENDING`) and `paused` (Stripe `paused`,
-- Play `PAUSED`).
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_status_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_status_check
    CHECK (status IN ('active', 'past_due', 'in_grace', 'canceled', 'expired', 'incomplete', 'paused'));
-- What the expiry job scans: entitled subscriptions that can run out.
CREATE INDEX subscriptions_due_idx ON subscriptions (current_period_end)
    WHERE status IN ('active', 'past_due', 'in_grace') AND current_period_end IS NOT NULL;

-- What became of each recorded event: applied, ignored (unknown type, nothing to do) or refused
-- (it named a user that does not own the customer or subscription).
ALTER TABLE billing_events ADD COLUMN outcome text NOT NULL DEFAULT 'applied';
CREATE INDEX billing_events_received_idx ON billing_events (received_at);

-- Invoices: the subscription they bill, and the provider time of the last event applied to the row
-- (an older event never overwrites a newer one).
ALTER TABLE invoices ADD COLUMN subscription_id text;
ALTER TABLE invoices ADD COLUMN state_at timestamptz NOT NULL DEFAULT 'epoch';

CREATE INDEX job_runs_started_idx ON job_runs (started_at);
