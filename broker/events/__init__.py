"""Domain events (consent.*, data.*) written to an outbox in the same transaction as the
change they describe, then delivered (webhooks) by Celery: never lost, never invented."""
