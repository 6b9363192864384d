"""RateAndDebit: the group-commit engine, reservations, balances and usage as callers see them."""
