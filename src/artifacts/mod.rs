//! k3s release artifacts (in progress).
