//! What a wasm binary is and what it imports and exports, decoded from the binary itself.
//!
//! This is the source of truth for an artifact's `component.imports`/`exports`: they are never
//! typed by hand. Decoding uses `wasmparser` at the version wasmtime uses, so "valid" here means
//! what the engine will accept with its default features.

use wasmparser::{Encoding, Parser, Payload, Validator};

/// The two kinds of wasm binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (WASI preview 1 programs).
    Module,
    /// A component (WASI 0.2 programs).
    Component,
}

impl WasmKind {
    /// The wasm config `os` for this kind: `wasip1` for modules, `wasip2` for components.
    pub fn wasi_os(self) -> &'static str {
        match self {
            WasmKind::Module => "wasip1",
            WasmKind::Component => "wasip2",
        }
    }
}

impl std::fmt::Display for WasmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        })
    }
}

/// A binary's kind and its top-level imports and exports.
///
/// Component names are the extern names (`wasi:cli/environment@0.2.0`); module names are
/// `module.name` (`wasi_snapshot_preview1.fd_write`). Both lists are sorted and deduplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmInfo {
    /// Module or component.
    pub kind: WasmKind,
    /// Top-level imports.
    pub imports: Vec<String>,
    /// Top-level exports.
    pub exports: Vec<String>,
}

/// Why bytes could not be read as wasm.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The bytes do not start with the wasm magic number.
    #[error("not a wasm binary: {len} bytes starting with {head:02x?}, expected the magic \\0asm")]
    NotWasm {
        /// Length of the input.
        len: usize,
        /// Its first bytes (at most 8).
        head: Vec<u8>,
    },
    /// The bytes start like wasm but do not validate.
    #[error("invalid wasm {kind}: {source}")]
    Invalid {
        /// What the header claimed.
        kind: WasmKind,
        /// The validator's message, with its offset.
        #[source]
        source: wasmparser::BinaryReaderError,
    },
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Whether `bytes` start with the wasm magic number (cheap; no validation).
pub fn has_wasm_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(WASM_MAGIC)
}

/// Validates `bytes` and decodes their kind, imports and exports.
pub fn inspect_wasm(bytes: &[u8]) -> Result<WasmInfo, WasmError> {
    if !has_wasm_magic(bytes) || bytes.len() < 8 {
        return Err(WasmError::NotWasm {
            len: bytes.len(),
            head: bytes.iter().take(8).copied().collect(),
        });
    }
    let claimed = if Parser::is_component(bytes) {
        WasmKind::Component
    } else {
        WasmKind::Module
    };
    Validator::new()
        .validate_all(bytes)
        .map_err(|source| WasmError::Invalid {
            kind: claimed,
            source,
        })?;
    decode_wasm_interface(bytes)
}

/// Decodes the kind, top-level imports and exports of `bytes` without validating them: for a
/// caller that only needs the interface and leaves validation to the engine that compiles it
/// (a guest choosing its world on every start, where validating the whole binary would cost
/// time and the validator's code pages each time).
pub fn decode_wasm_interface(bytes: &[u8]) -> Result<WasmInfo, WasmError> {
    if !has_wasm_magic(bytes) || bytes.len() < 8 {
        return Err(WasmError::NotWasm {
            len: bytes.len(),
            head: bytes.iter().take(8).copied().collect(),
        });
    }
    let claimed = if Parser::is_component(bytes) {
        WasmKind::Component
    } else {
        WasmKind::Module
    };
    decode_interface(bytes).map_err(|source| WasmError::Invalid {
        kind: claimed,
        source,
    })
}

/// Collects top-level imports and exports; nested modules and components are skipped by
/// tracking nesting depth through `Version`/`End` payloads.
fn decode_interface(bytes: &[u8]) -> Result<WasmInfo, wasmparser::BinaryReaderError> {
    let mut kind = WasmKind::Module;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { encoding, .. } => {
                if depth == 0 {
                    kind = match encoding {
                        Encoding::Component => WasmKind::Component,
                        Encoding::Module => WasmKind::Module,
                    };
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ImportSection(reader) if depth == 1 => {
                for import in reader.into_imports() {
                    let import = import?;
                    imports.push(format!("{}.{}", import.module, import.name));
                }
            }
            Payload::ExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export?.name.to_owned());
                }
            }
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    imports.sort();
    imports.dedup();
    exports.sort();
    exports.dedup();
    Ok(WasmInfo {
        kind,
        imports,
        exports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_imports_and_exports_are_decoded() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = wat::parse_str(
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "env" "foo" (func))
                (func (export "_start"))
                (memory (export "memory") 1))"#,
        )?;
        let info = inspect_wasm(&bytes)?;
        assert_eq!(info.kind, WasmKind::Module);
        assert_eq!(info.imports, ["env.foo", "wasi_snapshot_preview1.fd_write"]);
        assert_eq!(info.exports, ["_start", "memory"]);
        Ok(())
    }

    #[test]
    fn component_top_level_names_skip_nested_modules() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = wat::parse_str(
            r#"(component
                (import "wasi:cli/environment@0.2.0" (instance))
                (core module $m (import "inner" "x" (func)) (func (export "nested")))
                (component $c (import "inner:pkg/x" (instance)))
                (instance $i)
                (export "wasi:cli/run@0.2.0" (instance $i)))"#,
        )?;
        let info = inspect_wasm(&bytes)?;
        assert_eq!(info.kind, WasmKind::Component);
        assert_eq!(info.imports, ["wasi:cli/environment@0.2.0"]);
        assert_eq!(info.exports, ["wasi:cli/run@0.2.0"]);
        Ok(())
    }

    #[test]
    fn decoding_reads_the_interface_and_leaves_validation_to_the_engine()
    -> Result<(), Box<dyn std::error::Error>> {
        // Decodes, but does not validate: the function returns an i32 it never pushes.
        let bytes = wat::parse_str(r#"(module (func (export "run") (result i32) nop))"#)?;
        assert!(inspect_wasm(&bytes).is_err());
        let info = decode_wasm_interface(&bytes)?;
        assert_eq!(
            (info.kind, info.exports),
            (WasmKind::Module, vec!["run".to_owned()])
        );
        assert!(decode_wasm_interface(b"#!/bin/sh\n").is_err());
        Ok(())
    }

    #[test]
    fn text_is_not_wasm() {
        let err = inspect_wasm(b"#!/bin/sh\necho hi\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("not a wasm binary")));
    }

    #[test]
    fn truncated_wasm_is_invalid() {
        let err = inspect_wasm(b"\0asm\x01\0\0\0\x01\x05")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("invalid wasm module")),
            "{err:?}"
        );
    }
}
