"""Inventory: the low-stock and expiry alert sweep, every 15 minutes."""
