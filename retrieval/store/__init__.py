"""Persistence: an index directory (`index_dir`) built from the catalogue (`catalog`, the only
SQLAlchemy user), the vector index cache (`vectors`, the only FAISS user), the manifest
(`manifest`) and crash-safe file primitives (`files`)."""
