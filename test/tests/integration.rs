//! wasmcell's integration tests: one binary, modules by subject, helpers in `wasmcell-tests`.
//! They use the real `wasmcell` binary, skopeo and private containerd instances.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

/// Runs a scenario against private containerd 2.1 and 1.7, as one test each.
macro_rules! on_2_1_and_1_7 {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn containerd_2_1() {
                    super::$scenario(super::Version::V2_1);
                }
                #[test]
                fn containerd_1_7() {
                    super::$scenario(super::Version::V1_7);
                }
            }
        )*
    };
}

mod churn;
mod cli;
mod confinement;
mod demo_images;
mod faults;
mod http;
mod kubernetes;
mod p3;
mod registry;
mod shim;
mod signatures;
mod validation;
