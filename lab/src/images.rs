//! The one image the lab has without a registry: the built-in `lab/base`, the host's own
//! programs seen through the host view of `guest::mounts`. Lab tests that need host programs
//! (`sleep`, `sh`, iproute2) use it; cluster machines never do: every other `config.image` is
//! pulled from the lab's registry (`rootfs`, `runner::Runner::image`), as Fly pulls images.
//! This file must not start guests or know about the Machines API.

use std::path::PathBuf;

/// The built-in image: the host's own programs.
pub const BASE_IMAGE: &str = "lab/base";

/// The PATH directories of a `lab/base` guest: the host's PATH as this process sees it.
pub fn base_path_dirs() -> Vec<PathBuf> {
    let host = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&host).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_image_is_the_host_path() {
        let dirs = base_path_dirs();
        match std::env::var_os("PATH") {
            Some(p) => assert_eq!(dirs, std::env::split_paths(&p).collect::<Vec<_>>()),
            None => assert!(dirs.is_empty()),
        }
    }
}
