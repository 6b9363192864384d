"""What one customer's cached contracts cost in memory, measured over many customers' books.

The server keeps each rated customer's book (contracts, pool terms) until the cache's bound
(RATING_CONTRACT_CACHE_CUSTOMERS) pushes the least recent out, so its memory is this footprint
times the customers it serves, up to the bound.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence


async def bytes_per_book(database_url: str, tenant_id: str, customers: Sequence[str]) -> float:
    """Python heap per customer book kept, over `customers` (loaded as rating loads them)."""
    # Imported here: the load generator's spawned processes import the benchmark's modules.
    from rating_service.runtime.bootstrap import ProcessRole, bootstrap
    from rating_service.settings import Settings

    if not customers:
        return 0.0
    settings = Settings(database_url=database_url)
    async with bootstrap(settings, ProcessRole.SOLE_WRITER) as built:
        books = built.books
        await books.book(tenant_id, customers[0])  # the first load warms imports and the pool
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for customer in customers[1:]:
                await books.book(tenant_id, customer)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    return (after - before) / max(1, len(customers) - 1)
