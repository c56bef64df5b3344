"""The local demo: an embedded SFTP partner, an in-memory S3 and Secrets Manager, and ``dagster dev``.

Needs the ``demo`` extra (asyncssh, moto[server]); nothing here is imported by the code location.
"""
