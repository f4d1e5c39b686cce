//! Placeholder: the cluster machine is being written.
