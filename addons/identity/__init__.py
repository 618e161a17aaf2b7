"""Who is calling: issuer configuration, token parsing, claims, key fetching, verification, and the local dev issuer."""
