"""Shared test helpers: imported by test modules and conftest (never one test module from another)."""
