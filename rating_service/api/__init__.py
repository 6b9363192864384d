"""The gRPC adapters: servicers, the edge (auth, limits, errors, metrics), the server's assembly."""
