//! Placeholder: the function machine is being written.
