"""Persistence: an index directory (`index_dir`, its lifecycle: open, lock, manifest mirror)
owning its vector cache (`vector_cache`, searched by `searcher`), built from the catalogue
(`catalog*`, the only SQLAlchemy users) into FAISS indexes (`vectors*`, the only FAISS
users), the manifest (`manifest`), the PCA of --dim (`reduction`) and crash-safe file
primitives (`files`)."""
