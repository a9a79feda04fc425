"""School admins: login (password + TOTP, lockout), sessions, and their consent actions."""
