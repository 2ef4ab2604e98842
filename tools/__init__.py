"""Operational command-line tools: the demo, state inspection."""
