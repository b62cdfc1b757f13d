"""Safety: checks and rewrites of text going into and out of the model. A pure library: no web, no SQL."""
