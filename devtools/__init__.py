"""Development stand-ins, never run in production: the stack behind `portal up` (embedded
PostgreSQL, the identity provider, the Stripe stand-in, the SMTP sink), development tokens,
and demo and scale data. Commands come to `portal` through `devtools.cli.register`."""
