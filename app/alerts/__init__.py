"""Deduplicated alerts to staff, and staff subscriptions to them."""
