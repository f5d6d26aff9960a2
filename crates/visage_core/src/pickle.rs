//! A restricted pickle reader that builds arrays only (for official FLAME `.pkl` files).
