"""Fault suite: real processes killed at random moments; nothing reported done is lost."""
