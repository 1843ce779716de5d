//! `bascule-init`; the program is the library (`src/lib.rs`), so that its
//! fuzz bodies can reach the request handler.

#![deny(unsafe_code)]

fn main() {
    bascule_init::main()
}
