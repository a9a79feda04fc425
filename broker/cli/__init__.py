"""The operator CLI, `misbroker`."""
