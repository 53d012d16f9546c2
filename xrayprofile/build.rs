//! Turns on the probe's frame-pointer unwinder (`cfg(xrayprofile_frame_pointers)`,
//! `src/wall/probe.rs`) when this crate is compiled with
//! `-C force-frame-pointers=yes`. Without the flag nothing changes: the probe
//! uses the DWARF unwinder. No dependencies, so it adds nothing to the build.

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(xrayprofile_frame_pointers)");
    // Changing RUSTFLAGS already gives every crate a fresh build (cargo
    // hashes the flags into the fingerprint); these cover a user who sets
    // the encoded form for cargo itself.
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo::rerun-if-env-changed=RUSTFLAGS");
    println!("cargo::rerun-if-changed=build.rs");

    // Cargo passes the flags it will give rustc for this crate (from
    // RUSTFLAGS, CARGO_ENCODED_RUSTFLAGS, `build.rustflags` or
    // `target.<triple>.rustflags`), separated by 0x1f.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // The walk reads x86_64's rbp or aarch64's x29 and bounds itself by the
    // thread's stack as Linux reports it (Lambda's two architectures, one
    // OS); elsewhere the flag changes nothing here.
    let supported = os == "linux" && (arch == "x86_64" || arch == "aarch64");
    if supported && forces_frame_pointers(flags.split('\x1f')) {
        println!("cargo::rustc-cfg=xrayprofile_frame_pointers");
    }
}

/// Whether the last `force-frame-pointers` codegen option among `args` turns
/// them on, in any of rustc's spellings: `-Cforce-frame-pointers=yes`,
/// `-C force-frame-pointers=yes` (two arguments), `--codegen ...`, and the
/// bare option (which means yes).
fn forces_frame_pointers<'a>(args: impl Iterator<Item = &'a str>) -> bool {
    let mut forced = false;
    let mut codegen_next = false;
    for arg in args {
        let option = if codegen_next {
            codegen_next = false;
            Some(arg)
        } else if arg == "-C" || arg == "--codegen" {
            codegen_next = true;
            None
        } else {
            arg.strip_prefix("-C")
                .or_else(|| arg.strip_prefix("--codegen="))
        };
        let Some(option) = option else { continue };
        let (name, value) = option.split_once('=').unwrap_or((option, "yes"));
        if name.trim() == "force-frame-pointers" {
            // rustc takes the last occurrence.
            forced = matches!(value.trim(), "yes" | "y" | "on" | "true");
        }
    }
    forced
}
