"""plexsync auth: plex.tv PIN login, encrypted Plex tokens, servers and the choice of connection.

Only this service ever holds a Plex token in clear; everything else asks it for credentials.
"""
