"""The `plexsync` command: a gRPC client of the plexsync services."""
