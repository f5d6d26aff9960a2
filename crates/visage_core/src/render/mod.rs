//! The CPU reference of the differentiable photometric pass.
