"""The repository's tests that Python runs (integration, chaos)."""
