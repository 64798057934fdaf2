"""Stand-ins used by HTTP-layer tests; never by real-model tests."""
