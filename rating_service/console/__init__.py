"""The web console: the customer portal and the operator pages, a client of the gRPC API only.

It holds no database credentials and imports nothing of the server: every page is drawn from
RPC answers, asked with the visitor's own credential (a portal link, or an operator's API key).
"""
