"""What an operator watches: logs."""
