"""Where images come from: finding files on disk (`scan`) and turning bytes into pixels
(`decode`). Neither imports torch, FAISS or SQLAlchemy, so decode workers start fast."""
