"""The use cases: rating, contracts, the catalog, invoices, recharge, renewal, expiry, webhooks."""
