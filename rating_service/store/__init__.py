"""Tables, migrations and repositories: data in, data out (the decisions are the core's)."""
