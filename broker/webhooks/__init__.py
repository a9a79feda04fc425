"""Webhooks to partners: fan-out from the outbox, signed delivery with retries, redelivery."""
