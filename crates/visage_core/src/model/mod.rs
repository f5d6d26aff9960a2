//! The FLAME-topology head model: storage, forward pass and landmarks.
