"""Pharmacies: where paid prescriptions are sent, their delivery with retries, the pharmacy's
answers followed on the order, and the log of every exchange (connectors/ speaks to them)."""
