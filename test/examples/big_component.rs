//! Writes a large WASI 0.2 component for `make bench`'s reject-versus-compile figure.
//!
//!     big_component OUT.wasm MIB [IMPORT]
//!
//! The component's core module holds enough generated functions to make the binary about MIB
//! MiB of code; it exports `wasi:cli/run@0.2.0` (returning ok) and imports `IMPORT` (default
//! `wasi:cli/exit@0.2.0`, which the host provides; `wasi:keyvalue/store@0.2.0-draft` makes it
//! unsatisfiable) as an instance with one function.

use std::fmt::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, mib, rest @ ..] = args.as_slice() else {
        return Err("usage: big_component OUT.wasm MIB [IMPORT]".into());
    };
    let mib: usize = mib.parse()?;
    let import = rest.first().map_or("wasi:cli/exit@0.2.0", String::as_str);
    let (member, param) = if import.starts_with("wasi:cli/exit") {
        ("exit-with-code", "status-code")
    } else {
        ("open", "x")
    };
    // Each generated function encodes to about 1550 bytes.
    let functions = mib * 1024 * 1024 / 1550;
    let mut body = String::new();
    for i in 0..functions {
        write!(
            body,
            "(func (export \"f{i}\") (param i32) (result i32) local.get 0"
        )?;
        for k in 0..200u32 {
            write!(
                body,
                " i32.const {} i32.add i32.const {} i32.xor",
                k * 7 + i as u32,
                k + 3
            )?;
        }
        body.push_str(")\n");
    }
    let wat = format!(
        r#"(component
    (import "{import}" (instance $imp (export "{member}" (func (param "{param}" u8)))))
    (core module $m
        {body}
        (func (export "run") (result i32) i32.const 0))
    (core instance $i (instantiate $m))
    (func $run (result (result)) (canon lift (core func $i "run")))
    (instance $run_instance (export "run" (func $run)))
    (export "wasi:cli/run@0.2.0" (instance $run_instance)))"#
    );
    let wasm = wat::parse_str(&wat)?;
    std::fs::write(out, &wasm)?;
    eprintln!(
        "{out}: {} bytes, {functions} functions, imports {import}",
        wasm.len()
    );
    Ok(())
}
