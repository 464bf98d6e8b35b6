"""diffspec."""
