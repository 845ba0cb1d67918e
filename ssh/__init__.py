"""Reaching a node's sshd through frps with asyncssh (web shells and exec)."""
