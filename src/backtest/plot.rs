//! Plot placeholder.
