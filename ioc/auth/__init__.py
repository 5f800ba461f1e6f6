"""Access: bearer tokens and OpenID Connect, roles and permissions, masking, audit, limits."""
