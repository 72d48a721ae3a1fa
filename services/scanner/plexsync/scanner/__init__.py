"""plexsync scanner: pages through Plex libraries, detects changes, maps paths and writes to the catalog."""
