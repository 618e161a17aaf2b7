"""The Claude API key the gateway holds for its callers: which key applies, and reading it."""
