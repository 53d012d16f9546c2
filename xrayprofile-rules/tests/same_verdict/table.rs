// One table of values, fed to the compile-time checks of `#[xrayprofile]`
// (xrayprofile-macros/src/args.rs) and to the runtime's checks on
// `XRAYPROFILE_*` and `ProfileLayer` (xrayprofile/src/config.rs), whose tests
// `include!` this file: both must give each value the verdict written here.
//
// (argument, value as the user writes it inside the quotes, or as a float
// literal for `sample_rate`, accepted?)
const SAME_VERDICT: &[(&str, &str, bool)] = &[
    ("bucket", "my-profiles", true),
    ("bucket", "a.b-c", true),
    ("bucket", "ab", false),
    ("bucket", "My_Bucket", false),
    ("bucket", "-abc", false),
    ("bucket", "a..b", false),
    ("bucket", "10.0.0.1", false),
    ("bucket", " my-profiles", false),
    ("prefix", "profiles", true),
    ("prefix", "team/service/", true),
    ("prefix", "a b", true),
    ("prefix", "team ", false),
    ("prefix", " team", false),
    ("prefix", "/abs", false),
    ("prefix", "a/../b", false),
    ("prefix", "./p", false),
    ("prefix", "a\tb", false),
    ("mode", "wall", true),
    ("mode", "cpu", true),
    ("mode", "WALL", true),
    ("mode", " Cpu ", true),
    ("mode", "fast", false),
    ("mode", "wall-clock", false),
    ("sample_rate", "0.01", true),
    ("sample_rate", "1.0", true),
    ("sample_rate", "1e-5", true),
    ("sample_rate", "0.0", false),
    ("sample_rate", "1.5", false),
];
