"""Pure rating: an event resolved against its contract and priced, and what a rated event keeps."""
