"""End-to-end jobs, each a plain function the CLI wraps one-to-one (clip-retrieval style)."""
