"""Storage: SQLAlchemy tables, per-project engines, the batching writer and the record queries."""
