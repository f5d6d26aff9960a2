//! # visage_core
//!
//! Everything in Visage that does not need Bevy: the FLAME-topology head model and its forward
//! pass ([`model`]), the restricted pickle reader used to import official FLAME files
//! ([`pickle`]), photo ingest ([`photo`]), perception networks in candle ([`perception`]), and the
//! CPU reference of the differentiable photometric pass ([`render`]).
//!
//! The plugin crate `bevy_visage` only schedules these functions; it never re-implements them.

#![deny(missing_docs)]

pub mod build;
pub mod machine;
pub mod model;
pub mod perception;
pub mod photo;
pub mod pickle;
pub mod render;
