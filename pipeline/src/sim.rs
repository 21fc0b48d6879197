//! Kernel simulator (being implemented).
