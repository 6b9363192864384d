"""`rating dev --demo`: simulated services rate usage through the real API, watched live.

Three customers on short billing periods tell the product's story in a few minutes: prepaid
credit drains, a low-balance alert fires, an auto-recharge buys credit, a period closes into
an invoice that is paid, and one invoice fails on a mistyped card token until an operator
fixes the contract and replays it.

The view is made by pure functions of `DemoState` (`view`, testable without a terminal). `run.Demo`
does the I/O around them: the customers opened (`accounts`), the services' traffic (`traffic`),
the API watched (`watch`), a webhook receiver for the event feed (`feed`), the operator (`replay`)
and the screen (`terminal`).
"""
