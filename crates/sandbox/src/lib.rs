//! Linux sandbox primitives. Every kernel facility sits behind a seam that takes its root path
//! (or a syscall trait) as a parameter, so tests can run against tempdir fixtures.
