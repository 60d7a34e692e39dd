"""Worker processes: how they are launched into an env, handshaked, watched, restarted and stopped."""
