"""Per-stream sessions: audio in, segment events out."""
