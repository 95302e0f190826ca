"""Pharmacy sync: a sensor that delivers due prescription submissions, a schedule that polls
the pharmacies for what they hold (app/pharmacy/flows.py does both)."""
