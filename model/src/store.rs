//! The memory-mapped model store (skeleton: being implemented).
