//! The CNCF wasm artifact configuration, `application/vnd.wasm.config.v0+json`.
//!
//! Own serde types rather than the `oci-wasm` crate: that crate drags in a registry client and a
//! TLS stack, and this crate is formats only. Unknown fields are ignored so newer configs still
//! read; the checks in [`WasmConfig::validate`] are the ones the spec makes mandatory.

use serde::{Deserialize, Serialize};

use crate::wasm::{WasmInfo, WasmKind};

/// The artifact's config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author of the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip1` (a module) or `wasip2` (a component, WASI 0.2 or 0.3; the spec names no other
    /// value, so wasmcell writes `wasip2` for both and also reads `wasip3` as a component).
    pub os: String,
    /// Digests of the artifact's layers, in manifest order.
    #[serde(default)]
    pub layer_digests: Vec<String>,
    /// What the component imports and exports; required when `os` is `wasip2` or `wasip3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentSection>,
}

/// The `component` section of a [`WasmConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSection {
    /// Interfaces the component exports (`wasi:cli/run@0.2.0`).
    #[serde(default)]
    pub exports: Vec<String>,
    /// Interfaces the component imports (`wasi:cli/environment@0.2.0`).
    #[serde(default)]
    pub imports: Vec<String>,
    /// The WIT world the component targets, when its producer recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A config that parses but breaks the spec's rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WasmConfigError {
    /// `architecture` is not `wasm`.
    #[error("wasm config architecture is {found:?}, expected \"wasm\"")]
    Architecture {
        /// The value found.
        found: String,
    },
    /// `os` is not one wasmcell knows.
    #[error("wasm config os is {found:?}, expected \"wasip1\", \"wasip2\" or \"wasip3\"")]
    Os {
        /// The value found.
        found: String,
    },
    /// `os` is `wasip2` or `wasip3` but there is no `component` section.
    #[error("wasm config has os {os:?} but no \"component\" section (required for components)")]
    MissingComponent {
        /// The config's `os`.
        os: String,
    },
    /// `layerDigests` does not list the manifest's layers.
    #[error("wasm config layerDigests {config:?} do not match the manifest's layers {manifest:?}")]
    LayerDigests {
        /// What the config lists.
        config: Vec<String>,
        /// What the manifest lists.
        manifest: Vec<String>,
    },
}

impl WasmConfig {
    /// A config describing `info`, with imports and exports taken from the binary.
    pub fn describe(
        info: &WasmInfo,
        layer_digest: String,
        created: Option<String>,
        author: Option<String>,
        target: Option<String>,
    ) -> Self {
        let component = (info.kind == WasmKind::Component).then(|| ComponentSection {
            exports: info.exports.clone(),
            imports: info.imports.clone(),
            target,
        });
        WasmConfig {
            created,
            author,
            architecture: "wasm".to_owned(),
            os: info.kind.wasi_os().to_owned(),
            layer_digests: vec![layer_digest],
            component,
        }
    }

    /// Checks the rules the spec makes mandatory, against the manifest's layer digests.
    pub fn validate(&self, manifest_layers: &[String]) -> Result<(), WasmConfigError> {
        if self.architecture != "wasm" {
            return Err(WasmConfigError::Architecture {
                found: self.architecture.clone(),
            });
        }
        match self.os.as_str() {
            "wasip1" => {}
            "wasip2" | "wasip3" if self.component.is_none() => {
                return Err(WasmConfigError::MissingComponent {
                    os: self.os.clone(),
                });
            }
            "wasip2" | "wasip3" => {}
            other => {
                return Err(WasmConfigError::Os {
                    found: other.to_owned(),
                });
            }
        }
        if self.layer_digests != manifest_layers {
            return Err(WasmConfigError::LayerDigests {
                config: self.layer_digests.clone(),
                manifest: manifest_layers.to_vec(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_spec_example_shape() -> Result<(), serde_json::Error> {
        let cfg: WasmConfig = serde_json::from_str(
            r#"{"created":"2024-01-01T00:00:00Z","architecture":"wasm","os":"wasip2",
                "layerDigests":["sha256:aa"],"futureField":1,
                "component":{"exports":["wasi:cli/run@0.2.0"],"imports":["wasi:io/streams@0.2.0"],"target":null}}"#,
        )?;
        assert_eq!(cfg.validate(&["sha256:aa".to_owned()]), Ok(()));
        let section = cfg.component.as_ref().map(|c| c.imports.clone());
        assert_eq!(section, Some(vec!["wasi:io/streams@0.2.0".to_owned()]));
        Ok(())
    }

    #[test]
    fn components_without_component_are_rejected() -> Result<(), serde_json::Error> {
        for os in ["wasip2", "wasip3"] {
            let cfg: WasmConfig = serde_json::from_str(&format!(
                r#"{{"architecture":"wasm","os":"{os}","layerDigests":["sha256:aa"]}}"#
            ))?;
            let err = cfg.validate(&["sha256:aa".to_owned()]);
            let expected = WasmConfigError::MissingComponent { os: os.to_owned() };
            assert!(
                expected
                    .to_string()
                    .contains(&format!("os \"{os}\" but no \"component\" section")),
                "{expected}"
            );
            assert_eq!(err, Err(expected));
        }
        Ok(())
    }

    #[test]
    fn wrong_architecture_os_and_digests_are_named() -> Result<(), serde_json::Error> {
        let mut cfg: WasmConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"wasip1","layerDigests":["sha256:aa"]}"#,
        )?;
        assert!(matches!(
            cfg.validate(&[]),
            Err(WasmConfigError::Architecture { .. })
        ));
        cfg.architecture = "wasm".into();
        cfg.os = "linux".into();
        assert!(matches!(cfg.validate(&[]), Err(WasmConfigError::Os { .. })));
        cfg.os = "wasip1".into();
        assert!(matches!(
            cfg.validate(&[]),
            Err(WasmConfigError::LayerDigests { .. })
        ));
        Ok(())
    }
}
