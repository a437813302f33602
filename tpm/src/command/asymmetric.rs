//! Filled in by the following commits of the key commands.
