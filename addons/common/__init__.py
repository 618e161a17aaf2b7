"""Small things every concern uses, written once: bounded caches, durable writes, URL and host checks, state files."""
