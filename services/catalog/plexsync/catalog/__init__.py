"""plexsync catalog: the media database (libraries, items, metadata, files, collections) served over gRPC."""
