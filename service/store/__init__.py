"""Redis-backed state: corpora and the allocator's stored calibrations and memory. Imports only the runtime."""
