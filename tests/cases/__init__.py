"""Shared test case data (all-types items, limits), imported by unit and integration tests."""
