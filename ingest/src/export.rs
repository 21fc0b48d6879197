//! Kernel export file reader (being implemented).
