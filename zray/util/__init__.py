"""Utilities built on zray's core API."""
