"""Shared plumbing for every plexsync service: settings, logging, telemetry, gRPC bootstrap, auth, events."""
