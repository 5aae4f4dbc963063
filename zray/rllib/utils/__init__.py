"""Helpers shared by zray.rllib's pieces (no torch here)."""
