//! The thin Kubernetes layer: custom resource types and, later, resource builders,
//! watches, apply and finalizers.

pub mod crd;
