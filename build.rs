//! Collects every run of 32 or more characters (between spaces, quotes and
//! punctuation) from the repository's text files, so that production can
//! refuse a JWT secret that is published here (`config/test.toml`'s, a
//! script's, an example's).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// Where example secrets can live. Each is rescanned when it changes.
const SCANNED: &[&str] = &[
    "config",
    "bench",
    "scripts",
    "docs",
    "src",
    "tests",
    "loadtest/src",
    "migrations",
    ".ci",
    "README.md",
    "BENCHMARKS.md",
    "SECURITY.md",
    "Dockerfile",
    "docker-compose.yml",
    "Cargo.toml",
    "diesel.toml",
];

fn walk(path: &Path, tokens: &mut BTreeSet<String>) {
    if path.is_dir() {
        let Ok(entries) = fs::read_dir(path) else { return };
        for entry in entries.flatten() {
            walk(&entry.path(), tokens);
        }
    } else if let Ok(text) = fs::read_to_string(path) {
        let separators = |c: char| c.is_whitespace() || "\"'`=,;:()[]{}<>|&$#\\".contains(c);
        for token in text.split(separators) {
            if token.len() >= 32 {
                tokens.insert(token.to_owned());
            }
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut tokens = BTreeSet::new();
    for entry in SCANNED {
        let path = root.join(entry);
        println!("cargo:rerun-if-changed={}", path.display());
        walk(&path, &mut tokens);
    }
    let list: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("published.rs");
    fs::write(
        out,
        format!("pub const PUBLISHED: &[&str] = &[{}];\n", list.join(", ")),
    )
    .expect("write the published strings");
}
