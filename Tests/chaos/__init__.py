"""The seeded fault-injection run (make chaos)."""
