"""Generated protobuf and gRPC code for package plexsync.v1 (see `make proto`)."""
