"""Schools (tenants), their agents and their admins."""
