//! The rules of `ARCHITECTURE.md` that can be checked by reading the tree, checked: each test
//! names the invariant it backs. They read files only, so they cost milliseconds and need no
//! broker. (They live in the testkit because it is the one crate every other crate's tests
//! already build.)

#![allow(clippy::unwrap_used, reason = "a test that cannot read the tree fails loudly")]

use std::path::{Path, PathBuf};

/// The workspace's root folder.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Every crate folder under `crates/`, by name.
fn crates() -> Vec<(String, PathBuf)> {
    let mut crates: Vec<(String, PathBuf)> = std::fs::read_dir(workspace_root().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), path))
        .collect();
    crates.sort();
    assert!(crates.len() >= 8, "found the crates: {crates:?}");
    crates
}

/// The names of the packages a crate's manifest depends on, in any dependency table.
fn dependencies(crate_folder: &Path) -> Vec<String> {
    dependencies_in_tables(crate_folder, |table| table.ends_with("dependencies]"))
}

/// The names of the packages in the manifest's tables whose header `in_table` accepts.
fn dependencies_in_tables(crate_folder: &Path, in_table: fn(&str) -> bool) -> Vec<String> {
    let manifest = std::fs::read_to_string(crate_folder.join("Cargo.toml")).unwrap();
    let mut in_dependency_table = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependency_table = in_table(line);
            continue;
        }
        if in_dependency_table && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// Every `.rs` file below `folder`.
fn rust_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A library source file's code, without its unit tests (by convention the `#[cfg(test)]`
/// module at the end of the file).
fn code_without_unit_tests(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(tests) => text[..tests].to_owned(),
        None => text,
    }
}

/// The library sources of every crate: `src/` without the binaries' `main.rs` and `bin/`.
fn library_sources() -> Vec<(String, PathBuf)> {
    let mut sources = Vec::new();
    for (name, folder) in crates() {
        for path in rust_files(&folder.join("src")) {
            let is_binary = path.file_name().is_some_and(|file| file == "main.rs")
                || path.components().any(|component| component.as_os_str() == "bin");
            if !is_binary {
                sources.push((name.clone(), path));
            }
        }
    }
    sources
}

#[test]
fn only_rebound_kafka_depends_on_rdkafka() {
    for (name, folder) in crates() {
        let depends = dependencies(&folder)
            .iter()
            .any(|dependency| dependency.starts_with("rdkafka"));
        assert_eq!(
            depends,
            name == "rebound-kafka",
            "{name}: only rebound-kafka may depend on rdkafka"
        );
    }
}

#[test]
fn pure_crates_depend_on_neither_tokio_nor_a_kafka_client() {
    for pure in ["rebound-schema", "rebound-retry"] {
        let folder = workspace_root().join("crates").join(pure);
        for dependency in dependencies(&folder) {
            assert!(
                !["tokio", "rdkafka", "rebound-kafka", "reqwest", "rusqlite"].contains(&dependency.as_str()),
                "{pure} depends on {dependency}; it must do no I/O"
            );
        }
    }
}

#[test]
fn the_admin_cli_depends_on_no_service_crate() {
    let cli = workspace_root().join("crates/rebound-cli");
    let normal = dependencies_in_tables(&cli, |table| table == "[dependencies]");
    assert!(
        normal.iter().any(|dependency| dependency == "rebound-kafka"),
        "found the cli's dependencies: {normal:?}"
    );
    for service in ["rebound-consumer", "rebound-scheduler", "rebound-producer"] {
        assert!(
            !normal.iter().any(|dependency| dependency == service),
            "rebound-cli depends on {service}; what it shares with a service belongs in a library crate"
        );
    }
}

#[test]
fn library_code_never_exits_the_process() {
    for (name, path) in library_sources() {
        let code = code_without_unit_tests(&path);
        for forbidden in ["process::exit(", ".exit()"] {
            assert!(
                !code.contains(forbidden),
                "{name}: {} calls {forbidden}; a library returns an error and the binary picks the exit code",
                path.display()
            );
        }
    }
}

#[test]
fn anyhow_appears_only_in_binaries_and_the_admin_cli() {
    for (name, path) in library_sources() {
        if name == "rebound-cli" {
            continue;
        }
        assert!(
            !code_without_unit_tests(&path).contains("anyhow"),
            "{name}: {} uses anyhow; library crates have one thiserror enum",
            path.display()
        );
    }
}

#[test]
fn metrics_are_recorded_only_through_the_events_module() {
    let events = workspace_root().join("crates/rebound-service/src/events.rs");
    for (name, path) in library_sources() {
        if path == events {
            continue;
        }
        let code = code_without_unit_tests(&path);
        for macro_name in ["counter!", "gauge!", "histogram!"] {
            assert!(
                !code.contains(&format!("metrics::{macro_name}")),
                "{name}: {} records a metric itself; emit it through rebound_service::events",
                path.display()
            );
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_doc_line_saying_what_it_is_for() {
    let root = workspace_root();
    let mut files = rust_files(&root.join("crates"));
    files.extend(rust_files(&root.join("fuzz")));
    files.extend(rust_files(&root.join("examples")));
    assert!(files.len() > 50, "found {} files", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().take(3).any(|line| line.starts_with("//!")),
            "{} does not start with a //! line",
            path.display()
        );
    }
}

#[test]
fn every_long_flag_has_an_environment_variable() {
    let mut flags = 0;
    for (name, path) in library_sources() {
        let code = code_without_unit_tests(&path);
        let mut rest = code.as_str();
        while let Some(start) = rest.find("#[arg(") {
            let attribute_start = &rest[start..];
            let end = attribute_start.find(")]\n").unwrap_or(attribute_start.len());
            let attribute = &attribute_start[..end];
            if attribute.contains("long") {
                flags += 1;
                assert!(
                    attribute.contains("env ="),
                    "{name}: {} has a flag without an environment variable: {attribute}",
                    path.display()
                );
            }
            rest = &attribute_start[end.min(attribute_start.len())..];
            if end == 0 {
                break;
            }
        }
    }
    assert!(
        flags > 40,
        "found only {flags} flags; is the check still reading the sources?"
    );
}
