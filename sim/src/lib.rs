//! The quiesce simulation harness.
