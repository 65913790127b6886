"""The credential cache: policies, SQL models, encryption at rest and the ratchet commit."""
