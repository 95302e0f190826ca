"""Adapters to the systems the portal talks to; flows and services call them."""
