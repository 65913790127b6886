"""Log-replay analyzer: parse VPN session logs, replay cache policies, recommend one."""
