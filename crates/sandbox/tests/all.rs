//! Integration tests of conductor-sandbox: one binary, a module per area. Modules live in
//! `tests/<area>/mod.rs` so cargo does not also build each of them as a test binary of its own.

mod cgroup;
