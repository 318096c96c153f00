"""The Telegram bot (issue 7)."""
