"""Finding and masking secrets: the rule packs, the masker over JSON and text streams, URLs, and log redaction."""
