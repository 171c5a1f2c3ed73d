//! Every subcommand parses and explains itself: `--help` exits 0 with text (clap's debug
//! assertions, such as two flags with one name, fire here rather than in production).

use std::process::Command;

#[test]
fn every_subcommand_has_help() {
    let subcommands: &[&[&str]] = &[
        &[],
        &["stack"],
        &["stack", "up"],
        &["registry"],
        &["topology"],
        &["topics", "create"],
        &["seed", "olist"],
        &["seed", "events"],
        &["run"],
        &["replay"],
        &["load"],
        &["health"],
        &["sql"],
        &["train", "propensity"],
        &["serve"],
        &["cdc", "status"],
        &["cdc", "reset"],
        &["schemas"],
        &["bench", "cdc-snapshot"],
        &["bench", "bronze"],
        &["summary"],
        &["demo"],
    ];
    for args in subcommands {
        let out = Command::new(env!("CARGO_BIN_EXE_funnel")).args(*args).arg("--help").output().expect("running funnel");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "funnel {args:?} --help failed:\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("Usage:"), "funnel {args:?} --help printed no usage:\n{text}");
    }
}

#[test]
fn run_rejects_an_unknown_processor_with_the_valid_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_funnel")).args(["run", "nope"]).output().expect("running funnel");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seller-metrics") && err.contains("leads") && err.contains("loader"), "{err}");
}
