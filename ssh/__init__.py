"""Reaching a node's sshd through frps with asyncssh (the one package that imports it):
host keys verified, shells and commands."""
