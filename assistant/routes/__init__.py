"""Route handlers: they translate HTTP to calls and back, nothing more."""
