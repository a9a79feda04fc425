"""The broker's side of the on-prem agents: uploads, heartbeats, queued commands, health."""
