//! The Fly Machines API (filled in by the client work).
