"""Everything that speaks Stripe's protocol: the client, webhook signatures, what the inbox keeps
of an event, and refunds (queued in the outbox, sent by the worker).

What an event means for payments and orders is decided in `app.payments.flows`, which calls
the order flows; this package imports neither, so no package imports in a cycle.
"""
