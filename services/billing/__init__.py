"""Billing with Stripe: what a user asks for (checkout.py: Checkout, the Customer Portal, cancelling,
invoices), the webhook engine that applies Stripe's events (webhooks.py), the typed views of Stripe's
objects both read (stripe_objects.py) and how a Stripe subscription maps onto ours (states.py); the
translation of Stripe's failures into client errors (errors.py); and the billing configuration every
billing service takes (config.py), Google Play's included.

Nothing is re-exported here: services.subscriptions imports config.py, and the services import it."""
