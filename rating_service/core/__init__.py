"""The pure domain: money, errors, auth; the pricing, contracts, ledger, billing, rating cores."""
