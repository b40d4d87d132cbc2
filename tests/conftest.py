"""Shared pytest configuration for the tongban test suite."""
