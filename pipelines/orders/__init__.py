"""Orders: the expiry of unpaid orders, every minute."""
