"""Self-hosted customer-service chat assistant."""
