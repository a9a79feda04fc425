"""The encrypted, tiered cache of school data.

keys/crypto (envelope encryption, sealed format) - key_store (SQL data keys) - naming
(opaque names, keyed digests) - warm (SQL records) - hot (Redis pages) - cold (blob store)
- freshness/policy/refresh (validity, what to cache and refresh) - purge (expiry, shred) -
tasks (periodic jobs) - service (the facade the broker uses).
"""
