use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
struct Handler;

fn main() {}
