"""What a caller may reach: host routes, endpoint allowlists, and group policy for models and endpoints."""
