//! The `xrayprofile` command line, built in this package so that the CLI
//! tests (`tests/cli.rs`) can run the real binary beside the fixture
//! functions (`CARGO_BIN_EXE_xrayprofile_cli`). Users install it from
//! `xrayprofile-cli` (`cargo install --path xrayprofile-cli`).

fn main() -> std::process::ExitCode {
    xrayprofile_cli::main()
}
