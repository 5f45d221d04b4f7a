//! The deployment binary links neither the compiler (pc-codegen) nor tera nor syn: only the build
//! script depends on the compiler. Checked with `cargo tree` on the workspace.

use std::path::Path;
use std::process::Command;

/// `cargo tree -p pcc-deploy-example -e EDGES --prefix none`: one crate per line.
fn tree(edges: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let run = |offline: bool| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["tree", "-p", "pcc-deploy-example", "-e", edges, "--prefix", "none", "--manifest-path"]).arg(&manifest);
        if offline {
            cmd.arg("--offline");
        }
        cmd.output().expect("cannot run cargo")
    };
    // Offline first (the lock file and the registry cache hold everything); online if that fails.
    let mut out = run(true);
    if !out.status.success() {
        out = run(false);
    }
    assert!(out.status.success(), "cargo tree -e {edges} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("cargo tree prints UTF-8");
    let crates: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).collect();
    assert!(crates.iter().any(|c| c.starts_with("pc-runtime ")), "pc-runtime is not in the tree?\n{text}");
    crates
}

fn name(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

fn assert_absent(crates: &[String], banned: &[&str], what: &str) {
    let found: Vec<&String> = crates.iter().filter(|c| banned.contains(&name(c))).collect();
    assert!(found.is_empty(), "{what} contains {found:?}; the whole tree:\n{}", crates.join("\n"));
}

/// The crates linked into the binary (proc macros such as serde_derive run at compile time only).
#[test]
fn binary_links_neither_tera_nor_syn() {
    let crates = tree("normal,no-proc-macro");
    assert_absent(&crates, &["tera", "syn", "pc-codegen", "pc-macros", "quote", "proc-macro2"], "the linked dependency tree");
}

/// Even counting the proc macros of its dependencies, tera and the compiler are nowhere in the
/// binary's normal tree (syn is, only as serde_derive's and thiserror-impl's compile-time dependency).
#[test]
fn normal_tree_has_no_tera_and_no_compiler() {
    let crates = tree("normal");
    assert_absent(&crates, &["tera", "pc-codegen", "pc-macros"], "the normal dependency tree");
}
