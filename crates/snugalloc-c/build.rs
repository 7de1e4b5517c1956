//! Compiles the initial-exec TLS accessors (`src/tls.c`).

fn main() {
    println!("cargo:rerun-if-changed=src/tls.c");
    cc::Build::new()
        .file("src/tls.c")
        .opt_level(2)
        .compile("snugalloc_tls");
}
