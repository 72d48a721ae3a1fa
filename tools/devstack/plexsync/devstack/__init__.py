"""The embedded development stack: PostgreSQL, NATS JetStream, the services and fakeplex on one machine.

Used by `make up/down/test/demo` and by the test fixtures, so a fresh machine with only Python runs
everything. When DATABASE_URL / NATS_URL are set, the running servers they point at are used instead.
"""
