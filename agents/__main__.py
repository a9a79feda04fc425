"""`python -m agents` is `misbroker-agent`."""

from agents.cli import run

run()
