//! Photo ingest: decoding, orientation, colour conversion and size limits.
