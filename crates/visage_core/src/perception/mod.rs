//! Perception networks (face detection, landmarks, hands, segmentation, identity) in candle.

pub mod identity;
