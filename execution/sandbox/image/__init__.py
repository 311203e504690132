"""The sandbox runner image: production Dockerfile and an offline root-filesystem builder."""
