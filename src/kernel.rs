//! Kernel config verification (filled in by the kernel work).
