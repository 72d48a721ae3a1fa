"""Content-based sync rules: which items of a library a scan keeps.

The language itself (its tree and proto form) is `plexsync.common.rule_syntax`, shared with the catalog, which
validates rules with it; here are `evaluate` (the listing-stage and metadata-stage checks the scanner runs).
"""
