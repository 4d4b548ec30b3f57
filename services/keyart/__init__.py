"""Keyart: personalized artwork selection."""
