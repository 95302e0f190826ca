"""Payments: reconciliation with Stripe, daily (yesterday) and for any period."""
