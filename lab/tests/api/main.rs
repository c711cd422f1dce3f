//! HTTP tests of the lab's Machines API: each test starts the real server in-process on
//! 127.0.0.1:0 (or spawns the binary) with a fresh temp state dir and drives it with reqwest.

mod apps;
mod cli;
mod faults;
mod machines;
mod migration;
mod persistence;
mod sub;
mod util;
mod volumes;
