//! Links Debian's libtpms (package libtpms-dev).
fn main() {
    println!("cargo:rustc-link-lib=dylib=tpms");
    println!("cargo:rerun-if-changed=build.rs");
}
