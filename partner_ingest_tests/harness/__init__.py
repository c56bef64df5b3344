"""What the tests stand on, once: real services (OpenSSH sshd, ProFTPD, moto in server mode, a TCP fault
proxy, a misbehaving asyncssh server; all on 127.0.0.1), the processes behind them, and the helpers the
tests share (Dagster runs and sensor ticks, archives, file sizes, reading results back)."""
