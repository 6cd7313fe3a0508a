//! OCI registries for wasmcell: one repository reached with bounded, verified transfers
//! ([`client`]), the mirrors containerd's `hosts.toml` files name for a registry ([`hosts`]),
//! and cosign key-based signatures checked against a manifest digest ([`signature`]).

pub mod client;
pub mod hosts;
pub mod signature;

pub use client::{PulledManifest, Referrer, RegistryError, RegistryOptions, Repository};
pub use oci_client::Reference;
