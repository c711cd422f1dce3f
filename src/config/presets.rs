//! Fly facts the config is checked against, kept as data in one place: region codes and VM
//! size presets (reference/fly-machines-api.md §4 "region" and §6 "VM size presets").
//!
//! Pure data; the rules that use it live in `validate`.

use super::CpuKind;

/// Fly region codes the docs list (reference/fly-machines-api.md §4, 2026).
pub const REGIONS: &[&str] = &[
    "ams", "arn", "bom", "cdg", "dfw", "ewr", "fra", "gru", "iad", "jnb", "lax", "lhr", "nrt",
    "ord", "sin", "sjc", "syd", "yyz",
];

/// One Fly VM size preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub cpu_kind: CpuKind,
    pub cpus: u32,
    /// Smallest memory Fly accepts (also the preset default).
    pub min_memory_mb: u32,
    /// Largest memory Fly accepts.
    pub max_memory_mb: u32,
}

impl Preset {
    /// The step memory must be a multiple of: 256 MB for shared CPUs, 1024 MB for performance
    /// CPUs (flyctl's client-side check, reference §6).
    pub fn memory_step_mb(&self) -> u32 {
        match self.cpu_kind {
            CpuKind::Shared => 256,
            CpuKind::Performance => 1024,
        }
    }
}

const fn preset(name: &'static str, cpu_kind: CpuKind, cpus: u32, min: u32, max: u32) -> Preset {
    Preset {
        name,
        cpu_kind,
        cpus,
        min_memory_mb: min,
        max_memory_mb: max,
    }
}

use CpuKind::{Performance, Shared};

/// Fly's presets (reference §6 table). The GPU presets are performance machines with 8 CPUs
/// and 32768 MB by default; their maximum follows the performance rule of 8192 MB per vCPU.
pub const PRESETS: &[Preset] = &[
    preset("shared-cpu-1x", Shared, 1, 256, 2048),
    preset("shared-cpu-2x", Shared, 2, 512, 4096),
    preset("shared-cpu-4x", Shared, 4, 1024, 8192),
    preset("shared-cpu-6x", Shared, 6, 1536, 12288),
    preset("shared-cpu-8x", Shared, 8, 2048, 16384),
    preset("performance-1x", Performance, 1, 2048, 8192),
    preset("performance-2x", Performance, 2, 4096, 16384),
    preset("performance-4x", Performance, 4, 8192, 32768),
    preset("performance-6x", Performance, 6, 12288, 49152),
    preset("performance-8x", Performance, 8, 16384, 65536),
    preset("performance-10x", Performance, 10, 20480, 81920),
    preset("performance-12x", Performance, 12, 24576, 98304),
    preset("performance-14x", Performance, 14, 28672, 114688),
    preset("performance-16x", Performance, 16, 32768, 131072),
    preset("a10", Performance, 8, 32768, 65536),
    preset("l40s", Performance, 8, 32768, 65536),
    preset("a100-40gb", Performance, 8, 32768, 65536),
    preset("a100-80gb", Performance, 8, 32768, 65536),
];

/// The preset called `name`, if Fly has one.
pub fn preset_named(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_minimums_are_multiples_of_their_step_and_below_maximums() {
        for p in PRESETS {
            assert_eq!(p.min_memory_mb % p.memory_step_mb(), 0, "{}", p.name);
            assert_eq!(p.max_memory_mb % p.memory_step_mb(), 0, "{}", p.name);
            assert!(p.min_memory_mb < p.max_memory_mb, "{}", p.name);
        }
    }

    #[test]
    fn regions_are_sorted_three_letter_codes() {
        assert!(REGIONS.windows(2).all(|w| w[0] < w[1]));
        assert!(REGIONS
            .iter()
            .all(|r| r.len() == 3 && r.chars().all(|c| c.is_ascii_lowercase())));
    }
}
