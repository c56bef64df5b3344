"""SFTP side: connecting with pinned host keys, walking remote trees, reading files with bounded memory."""
