//! CLI tests: the real `fks-bootstrap` binary, run in a fresh temp dir per test, asserting on
//! exit codes, stdout and stderr. One module per command.

mod check_kernel;
mod completions;
mod create;
mod destroy;
mod kubeconfig;
mod list;
mod node;
mod render;
mod taint;
mod util;
mod validate;
