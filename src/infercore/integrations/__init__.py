"""Integrations of infercore with other frameworks."""
