"""E-mail and SMS to patients, through the outbox: `service.queue_email` / `service.queue_sms`."""
