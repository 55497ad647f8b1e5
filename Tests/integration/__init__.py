"""The integration tests: the real stack over HTTP, as a package (its helpers are imported relatively)."""
