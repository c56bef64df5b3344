"""Real services for tests: OpenSSH sshd, moto in server mode, a TCP fault proxy. All on 127.0.0.1."""
