"""The pure billing core: billing dates, invoice composition, invoice states and documents.

Nothing here does I/O or imports grpc, sqlalchemy, asyncpg or temporalio: the invoice
workflow's activities read the closed period, call `compose_invoice`, and store the result.
"""
