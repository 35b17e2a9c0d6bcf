"""Where images come from: finding files on disk (`scan`), turning bytes into pixels
(`decode`), the formats Pillow knows (`formats`), and the benchmark's generated images
(`synthetic`) and baseline decoders (`baseline`). The only package that imports Pillow; none of
it imports torch, FAISS or SQLAlchemy, so decode workers start fast."""
