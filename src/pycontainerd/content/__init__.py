"""Content: blobs addressed by digest, written through resumable ingests."""
