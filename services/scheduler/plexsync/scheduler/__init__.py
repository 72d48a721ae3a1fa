"""plexsync scheduler: decides when to scan what, and hands the jobs to the scanners over JetStream."""
