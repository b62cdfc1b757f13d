"""Safety: checks and rewrites of text going into and coming out of the model.

A pure library (no web, no SQL). ``guard.Guard`` is the entry point: ``check_input`` screens a
message, ``output_filter`` checks an answer while it streams. The checks: ``lexicon`` (sensitive
terms, obfuscation-robust), ``pii`` (with a per-request vault), ``injection`` (rules and the
system-prompt leak check), ``semantic`` (embedding-based injection and harmful-request detectors).
``policy`` reads the TOML policies; ``glossary`` rewrites a customer's required wording.

Errors: ``policy.PolicyError`` (a policy that cannot be used), ``e5_encoder.ModelNotFoundError``
(the embedding model's package is missing).
"""
