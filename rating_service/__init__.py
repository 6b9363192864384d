"""Real-time rating and credit-pool debiting for AI usage, with billing workflows on Temporal."""
