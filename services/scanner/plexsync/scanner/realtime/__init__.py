"""The real-time watcher: Plex notifications applied to the catalog within seconds."""
