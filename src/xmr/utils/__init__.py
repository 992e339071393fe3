"""Small shared helpers: atomic writes, JSON configs, hashing, progress bars."""
