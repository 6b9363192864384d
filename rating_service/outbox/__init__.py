"""The transactional outbox: every topic (`topics`) and the dispatcher that delivers its rows."""
