//! Compiles every `schemas/*.avsc` file of the workspace into the crate, so that binaries carry
//! the exact schemas they were built with and need no schema files at run time.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let schema_dir = manifest_dir.join("../../schemas");
    println!("cargo:rerun-if-changed={}", schema_dir.display());

    let mut schema_files: Vec<PathBuf> = fs::read_dir(&schema_dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", schema_dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "avsc"))
        .collect();
    // Sorting keeps the generated file identical between builds.
    schema_files.sort();

    let mut generated = String::from(
        "/// Every `schemas/*.avsc` file, as (file name, contents).\npub(crate) const EMBEDDED_SCHEMA_FILES: &[(&str, &str)] = &[\n",
    );
    for path in &schema_files {
        println!("cargo:rerun-if-changed={}", path.display());
        let file_name = path.file_name().expect("schema file has a name").to_string_lossy();
        let canonical = path.canonicalize().expect("schema path resolves");
        writeln!(
            generated,
            "    ({file_name:?}, include_str!({:?})),",
            canonical.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    generated.push_str("];\n");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out_dir.join("embedded_schemas.rs"), generated).expect("OUT_DIR is writable");
}
