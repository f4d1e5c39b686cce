//! Placeholder: the backend machine is being written.
